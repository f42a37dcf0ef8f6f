"""Trainers: reward models (PCRM, BT, scale controls) on TRL."""
