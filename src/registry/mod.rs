//! Registry adapters: one trait with the operations the sync engine needs, one file per
//! registry kind (ServiceComb Service Center first, Eureka next), and an in-memory twin for
//! tests.
