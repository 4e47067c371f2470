"""The Hugging Face ecosystem in and out: diffusers folders loaded as a Pipeline and runs exported as
diffusers folders; LoRA adapters through peft. Ranks beside experiments and tabular (over runs, under cli)."""
