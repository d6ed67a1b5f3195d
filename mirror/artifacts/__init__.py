"""Artifacts (tarballs, wheels, jars…) once the adapter's policy check has passed:

- `serve`: `ArtifactServer`, the entry point: a hit from disk (or memory), with HEAD, Range
  and conditional requests; a miss through the shared download;
- `download`: one upstream fetch per cache key across clients and worker processes, verified
  and stored (`mirror.blobs`);
- `pinning`: the first-seen digest of each artifact, and refusing bytes that changed;
- `passthrough`: sending bytes not verified yet as they arrive, the tail held back until they
  are: from a shared download, or relayed uncached when the disk is full.
"""
