"""One construct module per concern; constructs wire resources and hold no business logic."""
