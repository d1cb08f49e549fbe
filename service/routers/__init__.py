"""One router per resource: enroll, identify, subjects, health (with /readyz and /metrics); clips.py
holds the upload path /enroll and /identify share."""
