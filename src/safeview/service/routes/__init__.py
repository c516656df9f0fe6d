"""The service's routes, one ``APIRouter`` per resource: scans (submit, read, views, reveal,
decide, delete), the review queue, the admin resources (audit log, keys) and the service itself
(health, metrics, the review UI)."""
