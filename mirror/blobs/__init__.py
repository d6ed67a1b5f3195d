"""The content-addressed artifact store on disk, the only code that touches it: `store`
(blobs, index entries, temp files, eviction; verified writes) and `claims` (which worker
process fetches a key, and reading another process's fetch as it grows)."""
