"""Evaluation of trained models: perplexity (ppl), multiple choice (choice), reward-model
pairwise accuracy (rm); each on Ray Data with one actor pool per model, written up by report."""
