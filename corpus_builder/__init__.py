"""Stage 1: the synthetic parallel speech corpus (`sts-build-corpus`, `sts-encode`).

Streams Emilia (or a local folder), translates each transcript with an MT model, re-synthesizes
it in the other language with a TTS model, checks it, and writes Parquet shards. Not in this
version yet: the package holds no code until its commands work (see the README's roadmap).
"""
