"""Video in and out: decoding (1-based frame numbers, upright frames), files, folders and live sources of sampled
frames, and mp4 writing (docs/frames.md, docs/streaming.md).

- :mod:`.decode`: the one decoding path over PyAV;
- :mod:`.files`: video files and image folders as sampled frames (``open_frames``), ``VideoWriter``;
- :mod:`.live`: live sources (file, folder, camera, URL, stdin) with their events.

Nothing is imported here.
"""
