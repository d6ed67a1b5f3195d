"""Artifacts (tarballs, wheels, jars…) once the adapter's policy check has passed: `serve`
(`ArtifactServer`)."""
