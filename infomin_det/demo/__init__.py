"""End-to-end demo: pretrain -> convert -> verify -> fine-tune -> report on the embedded data."""
