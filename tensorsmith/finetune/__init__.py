"""Fine-tuning: start from a stored model or a Hugging Face checkpoint, train in rounds until
the gate holds, record the lineage."""
