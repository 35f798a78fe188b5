"""IAM policy language: parsing, condition operators, and AWS's evaluation logic."""
