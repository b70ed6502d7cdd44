"""The academic view beside the product view: perplexity and KL divergence of compressed GGUF models
(``llama-perplexity``), perplexity through an endpoint that returns prompt logprobs, and lm-evaluation-harness
tasks against the same targets. Informational: nothing here approves a model (no gate reads it).

One module per job: ``spec`` (the scenario's ``academic:`` section), ``perplexity`` (llama-perplexity
command lines and output parsing), ``kld`` (baseline logits cache, baseline vs candidates),
``endpoint_ppl`` (probe for prompt logprobs, perplexity through an endpoint), ``lmeval`` (the lm-eval
subprocess), ``compare`` (next to the quality pass, in words), ``report`` (the report.html section),
``run`` (one pass over a scenario), ``cli`` (``benchbox academic``).
Nothing heavy is imported here.
"""
