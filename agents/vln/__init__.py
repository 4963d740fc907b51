"""Vision-language navigation agents: trajectory featurization, the speaker, BLEU and speaker training."""
