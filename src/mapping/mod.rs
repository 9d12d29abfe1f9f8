//! Mapping files: parse (YAML with positions), templates, validate, plan.
