"""Model serving: chat-model clients from specs (``models``), the embedded llama.cpp
server (``embedded``), the pool of local endpoints (``pool``), the context guard
(``context_guard``), the job cache (``job_cache``), token counting (``tokens``) and the
usage records and transcripts of model calls (``accounting``). Steps get a provider of
clients from their run's context; nothing here is a graph step."""
