"""What the end-to-end tests share beyond conftest.py: the local rehearsal
of the deployed stack (iam_rehearsal, iam_policy, iam_grants, sam_stack,
local_sfn, lambda_sandbox, warm_function), MSK IAM tokens, a TCP proxy that
pauses, the migration story, and the pair cluster's elections
(truncation_support)."""
