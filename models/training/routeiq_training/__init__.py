"""RouteIQ's routing-model pipeline: train the learned routing strategies on LLMRouter
data, export them as artifacts (`models/ARTIFACTS.md`), evaluate and publish them."""
