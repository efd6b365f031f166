"""Storage actors: the pool, one actor per storage domain, and the job runner."""
