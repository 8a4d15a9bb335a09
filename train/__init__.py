"""Stage 4: continual pre-training and multitask SFT (`sts-train cpt`, `sts-train sft`).

Reads token shards and a model extended by `sts-extend-tokenizer`. Not in this version yet: the
package holds no code until its commands work (see the README's roadmap).
"""
