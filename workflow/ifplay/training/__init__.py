"""Fine-tuning: SFT, DPO and RFT with trl."""
