"""Storage for the service: one interface, atomic by contract, several backends."""
