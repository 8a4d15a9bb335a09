"""Stage 5: translate speech with a trained checkpoint (`sts-infer in.wav --to en -o out.wav`).

Not in this version yet: the package holds no code until its commands work (see the README's
roadmap). `sts.tasks.TaskFormatter.prompt`/`parse` already build the prompts and read outputs.
"""
