"""Deployment runtimes with sparse kernels (optional extras): sparsity buys speed only where a runtime skips zeros."""
