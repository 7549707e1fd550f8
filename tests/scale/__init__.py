"""Several service instances sharing PostgreSQL and Redis (issue 6)."""
