"""Speaker-based data synthesis and pretraining for the navigation agent."""
