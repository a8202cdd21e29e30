//! Test fixtures shared by the unit tests of several modules.

use control::FirewallConfig;

/// The seed's filter `nic-145244-eth0-vmware-sfw.2` (seed 003) as a config.
pub(crate) fn seed() -> FirewallConfig {
    #[allow(clippy::unwrap_used)]
    serde_json::from_str(
        r#"{
        "addrsets": [
            {"name": "ip-vm-36", "addrs": ["172.16.10.11/32"]},
            {"name": "ip-vm-33", "addrs": ["172.16.10.12/32"]},
            {"name": "ip-ipset-2", "addrs": ["192.168.110.10/32"]}
        ],
        "rulesets": [{"name": "domain-c25", "rules": [
            {"id": 1006, "sources": ["addrset:ip-vm-33"], "destinations": ["addrset:ip-vm-36"],
             "services": [{"protocol": "tcp", "port": 22}], "action": "accept", "log": true},
            {"id": 1005, "destinations": ["addrset:ip-ipset-2"], "action": "accept"},
            {"id": 1004, "services": [{"protocol": "ipv6-icmp", "icmp_type": 135},
                                      {"protocol": "ipv6-icmp", "icmp_type": 136}],
             "action": "accept"},
            {"id": 1003, "services": [{"protocol": "udp", "port": 67}, {"protocol": "udp", "port": 68}],
             "action": "accept"}
        ]}],
        "l2_rulesets": [{"name": "domain-c25_L2", "rules": [{"id": 1001, "action": "accept"}]}],
        "default_rule": {"id": 1002, "action": "reject", "log": true}
    }"#,
    )
    .unwrap()
}
