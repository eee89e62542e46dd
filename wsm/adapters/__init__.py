"""Entry points for platforms other than the Functions Framework (AWS Lambda). May import any area."""
