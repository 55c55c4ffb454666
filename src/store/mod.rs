//! The mapping store: which copy in this data centre mirrors which origin instance. An
//! embedded store in `--data-dir` serves a single node; etcd (`--etcd-endpoints`) serves
//! cluster mode. Keys and values are described in docs/DESIGN.md.
