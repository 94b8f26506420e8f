"""Any OpenAI-compatible model server (vLLM, llama.cpp, Ollama, LM Studio, OpenRouter, `transformers
serve`) through the official `openai` client. Never imports torch."""
