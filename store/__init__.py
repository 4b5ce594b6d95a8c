"""The database behind the API and the scheduler: tables and their public shapes, schema
migrations, and the services that read and change them (they never commit: the route, loop
or task that owns the unit of work does)."""
