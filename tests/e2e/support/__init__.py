"""What the end-to-end tests share beyond conftest.py: the local rehearsal
of the deployed stack (iam_rehearsal, iam_policy, iam_grants, sam_stack,
local_sfn, lambda_sandbox, warm_function), MSK IAM tokens, a TCP proxy that
pauses, the migration story, the pair cluster's elections
(truncation_support), and the helpers test files share: the SASL_SSL source
and its secrets (security), MSK IAM and ARN-only clusters (msk), groups,
acls, topics, moves (`ferry move` and the story's Ferry) and the state
machine's functions (state_machine). A test file imports nothing from
another test file."""
