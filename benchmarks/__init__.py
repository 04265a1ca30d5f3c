"""Speed comparisons of styler against PyTorch's own, each measured against its baseline in the same run."""
