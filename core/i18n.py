"""Every UI string, in one small table: English and 简体中文.

`t(key, lang, **params)` formats the string for `lang`, falling back to English. The UI language
(what the app's buttons say) is separate from a character's reply language (what the character
speaks), which lives in `core.prompts`.
"""

from __future__ import annotations

UI_LANGUAGES: dict[str, str] = {"en": "English", "zh": "简体中文"}

STRINGS: dict[str, dict[str, str]] = {
    # Image intake.
    "image.empty": {"en": "“{name}” is empty (0 bytes).", "zh": "“{name}” 是空文件（0 字节）。"},
    "image.too_large": {
        "en": "“{name}” is {size_mb} MB; the limit is {limit_mb} MB. Save it smaller (e.g. as JPEG) and try again.",
        "zh": "“{name}” 有 {size_mb} MB，上限是 {limit_mb} MB。请压缩（例如另存为 JPEG）后重试。",
    },
    "image.not_image": {
        "en": "“{name}” is not an image. Upload a PNG, JPEG, WebP, BMP or GIF.",
        "zh": "“{name}” 不是图片。请上传 PNG、JPEG、WebP、BMP 或 GIF。",
    },
    "image.unsupported": {
        "en": "“{name}” is a {format} image, which is not supported. Upload a PNG, JPEG, WebP, BMP or GIF.",
        "zh": "“{name}” 是 {format} 格式，不受支持。请上传 PNG、JPEG、WebP、BMP 或 GIF。",
    },
    "image.corrupt": {
        "en": "“{name}” is damaged or incomplete and cannot be read. Export it again and re-upload.",
        "zh": "“{name}” 已损坏或不完整，无法读取。请重新导出后再上传。",
    },
    "image.too_many_pixels": {
        "en": "“{name}” is {width}×{height} ({megapixels} megapixels); the limit is {limit} megapixels. "
        "Scale it down and try again.",
        "zh": "“{name}” 为 {width}×{height}（{megapixels} 百万像素），上限为 {limit} 百万像素。请缩小后重试。",
    },
    # Model loading: each failure is an instruction.
    "model.error.gated": {
        "en": "“{source}” is a gated model. Accept Google's Gemma licence on its Hugging Face page, create an access "
        "token, and set it as HF_TOKEN (environment or .streamlit/secrets.toml). Then try again.",
        "zh": "“{source}” 是受限模型。请先在 Hugging Face 页面接受 Google 的 Gemma 许可，创建访问令牌，"
        "并将其设为 HF_TOKEN（环境变量或 .streamlit/secrets.toml），然后重试。",
    },
    "model.error.not_found": {
        "en": "No model called “{source}” was found on the hub. Check REFSHEET_MODEL, or set HF_TOKEN if it is "
        "private or gated.",
        "zh": "在模型仓库中找不到 “{source}”。请检查 REFSHEET_MODEL；若为私有或受限模型，请设置 HF_TOKEN。",
    },
    "model.error.offline": {
        "en": "“{source}” is not downloaded yet and the hub cannot be reached (offline). Download it once while "
        "online, or set REFSHEET_MODEL to a local folder that holds a Gemma 3 checkpoint.",
        "zh": "“{source}” 尚未下载，且无法连接模型仓库（离线）。请联网下载一次，或将 REFSHEET_MODEL 设为存放 Gemma 3 "
        "模型的本地文件夹。",
    },
    "model.error.missing_folder": {
        "en": "The folder “{source}” does not exist. Set REFSHEET_MODEL to a folder that holds a Gemma 3 checkpoint "
        "(config.json, *.safetensors, tokenizer files) or to a hub id such as google/gemma-3-4b-it.",
        "zh": "文件夹 “{source}” 不存在。请将 REFSHEET_MODEL 设为包含 Gemma 3 模型（config.json、*.safetensors、"
        "分词器文件）的文件夹，或设为 google/gemma-3-4b-it 之类的模型 ID。",
    },
    "model.error.not_a_checkpoint": {
        "en": "“{source}” does not hold a readable model (config.json is missing or broken).",
        "zh": "“{source}” 中没有可读取的模型（config.json 缺失或损坏）。",
    },
    "model.error.text_only": {
        "en": "“{source}” is a text-only model and cannot see images. Use a Gemma 3 model with vision: "
        "google/gemma-3-4b-it, -12b-it or -27b-it.",
        "zh": "“{source}” 是纯文本模型，看不到图片。请使用带视觉能力的 Gemma 3：google/gemma-3-4b-it、-12b-it 或 "
        "-27b-it。",
    },
    "model.error.not_gemma3": {
        "en": "“{source}” is a {model_type} model; RefSheet Chat needs a Gemma 3 vision model such as "
        "google/gemma-3-4b-it.",
        "zh": "“{source}” 是 {model_type} 模型；RefSheet Chat 需要 Gemma 3 视觉模型，例如 google/gemma-3-4b-it。",
    },
    "model.error.oom": {
        "en": "Not enough memory to load “{source}” ({quantization}). Set REFSHEET_QUANTIZATION=4bit, or choose a "
        "smaller model (google/gemma-3-4b-it).",
        "zh": "内存不足，无法加载 “{source}”（{quantization}）。请设置 REFSHEET_QUANTIZATION=4bit，或换用更小的模型"
        "（google/gemma-3-4b-it）。",
    },
    "model.error.no_cuda": {
        "en": "REFSHEET_DEVICE is cuda, but no CUDA GPU is available. Set it to auto or cpu.",
        "zh": "REFSHEET_DEVICE 设为 cuda，但没有可用的 CUDA GPU。请改为 auto 或 cpu。",
    },
    "model.error.unknown": {
        "en": "The model “{source}” could not be loaded: {reason}",
        "zh": "无法加载模型 “{source}”：{reason}",
    },
    "model.notice.no_bnb": {
        "en": "{requested} quantization needs bitsandbytes, which cannot run here ({reason}); the model runs "
        "unquantized in bf16 and needs more memory. Install bitsandbytes to quantize.",
        "zh": "{requested} 量化需要 bitsandbytes，但它在此无法运行（{reason}）；模型以未量化的 bf16 运行，"
        "占用更多内存。安装 bitsandbytes 即可量化。",
    },
    "model.phase.download": {"en": "Downloading {source} (first time only)…", "zh": "正在下载 {source}（仅首次）…"},
    "model.phase.load": {
        "en": "Loading the model ({quantization}, {device})…",
        "zh": "正在加载模型（{quantization}，{device}）…",
    },
    # Sampler settings.
    "sampler.temperature": {
        "en": "Temperature must be between 0 and 2 (0 = always the most likely word); got {value}.",
        "zh": "温度必须在 0 到 2 之间（0 表示总选最可能的词）；当前为 {value}。",
    },
    "sampler.top_p": {
        "en": "Top-p must be above 0 and at most 1; got {value}.",
        "zh": "Top-p 必须大于 0 且不超过 1；当前为 {value}。",
    },
    "sampler.top_k": {
        "en": "Top-k must be 0 (off) or more; got {value}.",
        "zh": "Top-k 必须为 0（关闭）或更大；当前为 {value}。",
    },
    "sampler.max_new_tokens": {
        "en": "Reply length must be between 1 and 4096 tokens; got {value}.",
        "zh": "回复长度必须在 1 到 4096 个 token 之间；当前为 {value}。",
    },
    "sampler.repetition_penalty": {
        "en": "Repetition penalty must be between 1 and 2; got {value}.",
        "zh": "重复惩罚必须在 1 到 2 之间；当前为 {value}。",
    },
    "sampler.seed": {
        "en": "The seed must be 0 or more; got {value}.",
        "zh": "随机种子必须为 0 或更大；当前为 {value}。",
    },
    "chat.error.too_long": {
        "en": "This message is too long for the model's context: it needs {needed} tokens, the limit is {budget}. "
        "Shorten it or attach fewer images.",
        "zh": "这条消息超出了模型的上下文：需要 {needed} 个 token，上限为 {budget}。请缩短内容或减少图片。",
    },
}


def t(key: str, lang: str = "en", **params: object) -> str:
    """The string `key` in `lang` (English if missing there), formatted with `params`."""
    entry = STRINGS.get(key)
    if entry is None:
        return key
    text = entry.get(lang) or entry["en"]
    return text.format(**params) if params else text


def ui_language_for(locale: str | None) -> str:
    """Pick the UI language from a browser locale such as 'zh-CN' or 'en-US'."""
    if locale and locale.lower().startswith("zh"):
        return "zh"
    return "en"
