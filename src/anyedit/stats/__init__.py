"""Statistics an update is regularised with: text corpora, the covariance cache (and AlphaEdit's null-space
basis), and the chat conversations an edit is told to preserve."""
