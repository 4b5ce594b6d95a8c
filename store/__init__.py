"""The database behind the API and the scheduler: tables and their public shapes, schema
migrations, and the services that read and change them.

Services never commit: they take a session, add and flush. The route, loop or task that
owns the unit of work commits once, so an action and its audit record land together; what
other processes must hear of it (live followers, the scheduler) goes into an
``announcements.Announcements``, sent after that commit (docs/architecture.md,
"Transactions").
"""
