//! Sans-IO packet pipeline (being written).
