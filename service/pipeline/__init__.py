"""The clip pipeline: one video in, aligned gait sequences and their embeddings out. Stages:
decode.py -> segment_yolo.py | segment_bgsub.py -> track.py -> depth.py -> align.py -> embed.py,
wired by pipeline.py, configured by config.py."""
