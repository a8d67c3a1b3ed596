//! PQ4 cryptography (see docs/pq4.md).
