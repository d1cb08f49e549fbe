"""One router per resource: enroll, identify, subjects, galleries (/gallery, /gallery/reembed), keys,
audit, admin (subjects whose ids no URL path carries), health (with /readyz and /metrics); clips.py
holds the upload path /enroll and /identify share. Roles: service.auth; errors: service.errors."""
