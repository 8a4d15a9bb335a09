"""The corpus shard contract: the columns every Parquet shard of `sts-build-corpus` holds.

A shard is a Parquet file that `datasets.load_dataset("parquet", data_files=...)` opens with the
features below (the `huggingface` schema metadata carries them). Audio columns are
`datasets.Audio` structs `{"bytes": <flac or wav file bytes>, "path": <name>}`, stored at their own
rate; open them with `Audio(decode=False)` and `sts.audio.load_audio(row["src_audio"]["bytes"])`
(datasets 5.x decodes audio only through torchcodec/FFmpeg). `sts-encode` adds the code columns.

    from corpus_builder.schema import corpus_features, encoded_features
"""

from __future__ import annotations


def _features(with_codes: bool):
    import datasets

    columns = {
        "id": datasets.Value("string"),  # unique over the corpus; the resume key
        "src_lang": datasets.Value("string"),  # "ja" | "en"
        "tgt_lang": datasets.Value("string"),
        "src_text": datasets.Value("string"),  # transcript of src_audio
        "tgt_text": datasets.Value("string"),  # translation, spoken in tgt_audio
        "src_audio": datasets.Audio(decode=False),
        "tgt_audio": datasets.Audio(decode=False),
        "src_duration": datasets.Value("float32"),  # seconds
        "tgt_duration": datasets.Value("float32"),
        "speaker": datasets.Value("string"),  # source speaker id, "" when unknown
        "source": datasets.Value("string"),  # e.g. "emilia", "local", "text-pairs"
        "mt_backend": datasets.Value("string"),  # e.g. "hf:LiquidAI/LFM2-350M-ENJP-MT", "reference"
        "tts_backend": datasets.Value("string"),
        "tgt_asr_error": datasets.Value(
            "float32"
        ),  # CER (ja) / WER (en) of ASR(tgt_audio) vs tgt_text; NaN = unchecked
        "speaker_similarity": datasets.Value(
            "float32"
        ),  # cosine(src, tgt) speaker embeddings; NaN = unchecked
    }
    if with_codes:
        columns["src_codes"] = datasets.List(datasets.Value("int32"))  # [T_src], 50 per second
        columns["tgt_codes"] = datasets.List(datasets.Value("int32"))  # [T_tgt]
    return datasets.Features(columns)


def corpus_features():
    """Features of a shard as `sts-build-corpus` writes it."""
    return _features(with_codes=False)


def encoded_features():
    """Features of a shard after `sts-encode` added `src_codes` / `tgt_codes`."""
    return _features(with_codes=True)
