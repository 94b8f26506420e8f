"""Every UI string, in one small table: English and 简体中文.

`t(key, lang, **params)` formats the string for `lang`, falling back to English. The UI language
(what the app's buttons say) is separate from a character's reply language (what the character
speaks), which lives in `core.model.prompts`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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
    "image.damaged_stored": {
        "en": "The stored picture “{name}” is damaged and cannot be read. Remove it from the character's images "
        "(Library → Edit) and add it again.",
        "zh": "已保存的图片 “{name}” 已损坏，无法读取。请在角色的图片中删除它（角色库 → 编辑）后重新添加。",
    },
    "image.damaged_shown": {"en": "“{name}”: this picture is damaged", "zh": "“{name}”：这张图片已损坏"},
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
        "online, or set REFSHEET_MODEL to a local folder that holds a Gemma 3 checkpoint. Gemma is a gated "
        "model: before the download, accept Google's Gemma licence on its Hugging Face page and set your access "
        "token as HF_TOKEN (environment or .streamlit/secrets.toml).",
        "zh": "“{source}” 尚未下载，且无法连接模型仓库（离线）。请联网下载一次，或将 REFSHEET_MODEL 设为存放 Gemma 3 "
        "模型的本地文件夹。Gemma 是受限模型：下载前请在 Hugging Face 页面接受 Google 的 Gemma 许可，并将访问令牌设为 "
        "HF_TOKEN（环境变量或 .streamlit/secrets.toml）。",
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
    # The remote backend: what to do when the server does not serve.
    "model.error.api_settings": {
        "en": "REFSHEET_BACKEND is openai, but the server is not named: set REFSHEET_API_BASE (e.g. "
        "http://localhost:11434/v1 for Ollama, http://gpu-box:8000/v1 for vLLM) and REFSHEET_API_MODEL (e.g. "
        "gemma3:4b, google/gemma-3-27b-it), in the environment or .streamlit/secrets.toml.",
        "zh": "REFSHEET_BACKEND 设为 openai，但没有指明服务器：请设置 REFSHEET_API_BASE（例如 Ollama 的 "
        "http://localhost:11434/v1、vLLM 的 http://gpu-box:8000/v1）和 REFSHEET_API_MODEL（例如 gemma3:4b、"
        "google/gemma-3-27b-it），可写在环境变量或 .streamlit/secrets.toml 中。",
    },
    "model.error.unreachable": {
        "en": "The model server at {base} cannot be reached ({reason}). Check that it is running and that "
        "REFSHEET_API_BASE is right (it usually ends in /v1). Your message is saved; try again once it is up.",
        "zh": "无法连接位于 {base} 的模型服务器（{reason}）。请确认服务器正在运行，且 REFSHEET_API_BASE 正确"
        "（通常以 /v1 结尾）。你的消息已保存；服务器恢复后请重试。",
    },
    "model.error.server_timeout": {
        "en": "The model server at {base} did not answer in time. It may be busy or loading the model; "
        "your message is saved, try again in a moment.",
        "zh": "位于 {base} 的模型服务器未及时响应，可能正忙或正在加载模型；你的消息已保存，请稍后重试。",
    },
    "model.error.unauthorized": {
        "en": "The model server at {base} refused the API key. Set the right one as REFSHEET_API_KEY "
        "(environment or .streamlit/secrets.toml).",
        "zh": "位于 {base} 的模型服务器拒绝了 API 密钥。请将正确的密钥设为 REFSHEET_API_KEY（环境变量或 "
        ".streamlit/secrets.toml）。",
    },
    "model.error.unknown_model": {
        "en": "The server has no model called “{model}”. Set REFSHEET_API_MODEL to one it serves: {available}",
        "zh": "服务器上没有名为 “{model}” 的模型。请将 REFSHEET_API_MODEL 设为它提供的模型之一：{available}",
    },
    "model.error.rate_limited": {
        "en": "The model server at {base} asks to slow down (too many requests). Your message is saved; "
        "try again in {seconds} s.",
        "zh": "位于 {base} 的模型服务器要求放慢请求（请求过多）。你的消息已保存；请 {seconds} 秒后重试。",
    },
    "model.error.server_error": {
        "en": "The model server at {base} failed ({status}): {reason}. Your message is saved; try again, or look "
        "at the server's log.",
        "zh": "位于 {base} 的模型服务器出错（{status}）：{reason}。你的消息已保存；请重试，或查看服务器日志。",
    },
    "model.error.server_refused": {
        "en": "The model server at {base} refused the request ({status}): {reason}",
        "zh": "位于 {base} 的模型服务器拒绝了请求（{status}）：{reason}",
    },
    "model.error.no_vision": {
        "en": "The model “{model}” on the server cannot see images, so it cannot see this character's reference "
        "sheet. Serve a Gemma 3 model with vision (4B, 12B or 27B; with llama.cpp, load its mmproj file too).",
        "zh": "服务器上的模型 “{model}” 看不到图片，因此看不到这个角色的设定图。请改用带视觉能力的 Gemma 3 模型"
        "（4B、12B 或 27B；使用 llama.cpp 时还需加载其 mmproj 文件）。",
    },
    "model.phase.connect": {"en": "Connecting to {base}… {elapsed} s", "zh": "正在连接 {base}… {elapsed} 秒"},
    "model.connected": {"en": "Connected to {description}", "zh": "已连接到 {description}"},
    "model.notice.no_bnb": {
        "en": "{requested} quantization needs bitsandbytes, which cannot run here ({reason}); the model runs "
        "unquantized in bf16 and needs more memory. Install bitsandbytes to quantize.",
        "zh": "{requested} 量化需要 bitsandbytes，但它在此无法运行（{reason}）；模型以未量化的 bf16 运行，"
        "占用更多内存。安装 bitsandbytes 即可量化。",
    },
    "model.phase.download": {
        "en": "Downloading {source} (first time only)… {elapsed} s",
        "zh": "正在下载 {source}（仅首次）… {elapsed} 秒",
    },
    "model.phase.load": {
        "en": "Loading the model ({quantization}, {device}, {dtype})… {elapsed} s",
        "zh": "正在加载模型（{quantization}，{device}，{dtype}）… {elapsed} 秒",
    },
    # What a reply is waiting for, with the seconds since it was asked for.
    "progress.queued": {
        "en": "Waiting for the model: {ahead} reply(ies) ahead of yours · {elapsed} s",
        "zh": "正在排队：前面还有 {ahead} 条回复 · {elapsed} 秒",
    },
    "progress.sheet": {
        "en": "Looking at the reference sheet ({n} of {of})… {elapsed} s",
        "zh": "正在看设定图（第 {n} 张，共 {of} 张）… {elapsed} 秒",
    },
    "progress.picture": {
        "en": "Looking at your picture ({n} of {of})… {elapsed} s",
        "zh": "正在看你发的图片（第 {n} 张，共 {of} 张）… {elapsed} 秒",
    },
    "progress.reading": {
        "en": "Reading the conversation ({tokens} tokens)… {elapsed} s",
        "zh": "正在阅读对话（{tokens} 个 token）… {elapsed} 秒",
    },
    "progress.server": {
        "en": "Waiting for the model server at {host}… {elapsed} s",
        "zh": "正在等待模型服务器 {host}… {elapsed} 秒",
    },
    "progress.thinking": {"en": "Thinking… {elapsed} s", "zh": "正在思考… {elapsed} 秒"},
    "progress.writing": {"en": "Writing… {elapsed} s", "zh": "正在回复… {elapsed} 秒"},
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
    "chat.error.other": {"en": "{reason}", "zh": "{reason}"},
    "chat.error.too_long_server": {
        "en": "This conversation is too long for the model's context, the server says. Shorten the message, "
        "attach fewer images, lower the longest reply in the reply settings, or set REFSHEET_CONTEXT_TOKENS to "
        "the server's context length so that the oldest messages are left out.",
        "zh": "服务器表示，这段对话超出了模型的上下文长度。请缩短消息、减少图片、在回复设置中调低最长回复，或将 "
        "REFSHEET_CONTEXT_TOKENS 设为服务器的上下文长度，以便略去最早的消息。",
    },
    "chat.error.too_long": {
        "en": "This message is too long for the model's context: it needs {needed} tokens, the limit is {budget}. "
        "Shorten it, attach fewer images, or lower the longest reply in the reply settings.",
        "zh": "这条消息超出了模型的上下文：需要 {needed} 个 token，上限为 {budget}。请缩短内容、减少图片，"
        "或在回复设置中调低最长回复。",
    },
    "chat.error.character_too_long": {
        "en": "This character alone (instruction, profile and reference images) needs {needed} tokens with room "
        "for a reply, but the model's context holds {budget}. Shorten the character's profile in the Library, "
        "remove extra reference images, lower the longest reply in the reply settings, or raise "
        "REFSHEET_CONTEXT_TOKENS.",
        "zh": "仅这个角色（指令、资料和参考图）加上回复空间就需要 {needed} 个 token，而模型的上下文上限为 "
        "{budget}。请在角色库中精简角色资料、删除多余的参考图、在回复设置中调低最长回复，或调高 "
        "REFSHEET_CONTEXT_TOKENS。",
    },
    # What services refuse, and what is not there (deleted in another tab, or never there).
    "refused.no_main_sheet": {"en": "Upload the main reference sheet first.", "zh": "请先上传主设定图。"},
    "refused.last_image": {
        "en": "A character needs at least one reference sheet; add another before removing this one.",
        "zh": "角色至少需要一张设定图；请先添加另一张再移除这张。",
    },
    "refused.reply_too_long": {
        "en": "With this character a reply can be at most {most} tokens long: the model's context holds {limit} "
        "tokens and the character (instruction, profile and reference images) takes {character}. Choose a "
        "shorter longest reply; nothing was saved.",
        "zh": "对这个角色，回复最长只能是 {most} 个 token：模型的上下文上限为 {limit} 个 token，"
        "角色（指令、资料和参考图）已占用 {character} 个。请调低最长回复；设置尚未保存。",
    },
    "refused.bad_field": {
        "en": "The field “{field}” holds a value of the wrong kind; nothing was saved.",
        "zh": "字段 “{field}” 的值类型不正确；尚未保存任何内容。",
    },
    "refused.too_long": {
        "en": "The field “{field}” can be at most {limit} characters long; nothing was saved.",
        "zh": "字段 “{field}” 最多 {limit} 个字符；尚未保存任何内容。",
    },
    "notfound.character": {
        "en": "That character is not here (it may have been deleted).",
        "zh": "找不到这个角色（可能已被删除）。",
    },
    "notfound.conversation": {
        "en": "That conversation is not here (it may have been deleted).",
        "zh": "找不到这个对话（可能已被删除）。",
    },
    "notfound.message": {
        "en": "That message is not here any more (it may have been deleted in another tab).",
        "zh": "这条消息已不存在（可能已在其他标签页中删除）。",
    },
    "notfound.image": {"en": "That image is not here any more.", "zh": "这张图片已不存在。"},
    "refused.persona_name_too_long": {
        "en": "Your name for the characters can be at most {limit} characters long.",
        "zh": "角色称呼你的名字最多 {limit} 个字符。",
    },
    "refused.persona_description_too_long": {
        "en": "Your description can be at most {limit} characters long: every character reads it before each reply.",
        "zh": "你的简介最多 {limit} 个字符：每个角色在每次回复前都会读它。",
    },
    "notfound.user": {"en": "There is nobody by that name here.", "zh": "这里没有这个人。"},
    "refused.not_yours": {
        "en": "“{name}” is shared with you to chat with and copy; only its owner can change it. Copy it to "
        "make a version of your own.",
        "zh": "“{name}” 是共享给你聊天和复制的；只有所有者可以修改。复制一份即可拥有自己的版本。",
    },
    "refused.admins_only": {"en": "Only an admin can do that.", "zh": "只有管理员可以这样做。"},
    # Signing in.
    "auth.why": {
        "en": "This RefSheet Chat belongs to a team. Sign in to see your characters and conversations.",
        "zh": "这个 RefSheet Chat 属于一个团队。请登录以查看你的角色和对话。",
    },
    "auth.sign_in": {"en": "Sign in", "zh": "登录"},
    "auth.sign_in_with": {"en": "Sign in with {provider}", "zh": "使用 {provider} 登录"},
    "auth.sign_out": {"en": "Sign out", "zh": "退出登录"},
    "auth.signed_in_as": {"en": "Signed in as {name}", "zh": "已登录：{name}"},
    "auth.admin": {"en": "admin", "zh": "管理员"},
    "auth.signed_out": {
        "en": "You signed out of RefSheet Chat after this sign-in. Sign in again.",
        "zh": "你在这次登录之后退出了 RefSheet Chat。请重新登录。",
    },
    # Teams in the Library.
    "team.private": {"en": "Private: only you see it", "zh": "私有：只有你能看到"},
    "team.shared_by_you": {"en": "Shared with the team", "zh": "已与团队共享"},
    "team.shared_by": {"en": "Shared by {name}: chat with it or copy it", "zh": "{name} 共享：可以聊天或复制"},
    "team.private_of": {
        "en": "{name}'s, private: listed for you as an admin, to delete if it must go; you cannot open it",
        "zh": "{name} 的私有角色：作为管理员你能看到它以便必要时删除，但不能打开它",
    },
    "team.share": {"en": "Share with the team", "zh": "与团队共享"},
    "team.share_help": {
        "en": "Everyone signed in can then see this character, chat with it (their conversations stay their own) "
        "and copy it; only you can change or delete it.",
        "zh": "共享后，所有登录的人都能看到这个角色、与它聊天（各自的对话仍属于自己）并复制它；只有你能修改或删除它。",
    },
    "team.local_library": {
        "en": "Made before sign-in: {count} characters, {chats} conversations",
        "zh": "启用登录前创建的内容：{count} 个角色，{chats} 个对话",
    },
    "team.nobody_yet": {
        "en": "Nobody else has signed in yet: hand these over once the person they are for has signed in once.",
        "zh": "还没有其他人登录过：请等对方登录一次后再移交。",
    },
    "team.hand_to": {"en": "Give them to", "zh": "移交给"},
    "team.hand_over": {"en": "Hand over", "zh": "移交"},
    "team.handed_over": {
        "en": "{count} characters and {chats} conversations now belong to {name}.",
        "zh": "{count} 个角色和 {chats} 个对话现在属于 {name}。",
    },
    "auth.not_allowed": {
        "en": "You are signed in as {email}, but this server is for its team only. Ask an admin to add your "
        "address (REFSHEET_ALLOWED_EMAILS) or domain (REFSHEET_ALLOWED_DOMAINS), or sign in with another account.",
        "zh": "你已用 {email} 登录，但此服务器仅供团队使用。请让管理员添加你的邮箱（REFSHEET_ALLOWED_EMAILS）或域名"
        "（REFSHEET_ALLOWED_DOMAINS），或换一个账号登录。",
    },
    "auth.unverified": {
        "en": "Your account ({email}) has no verified email address, which this server needs to let you in. "
        "Verify it with your identity provider, or sign in with another account.",
        "zh": "你的账号（{email}）没有经过验证的邮箱，而此服务器需要它才能让你进入。"
        "请在身份提供方处验证邮箱，或换一个账号登录。",
    },
    # The database at start-up: said before anything touches the file.
    "database.not_sqlite": {
        "en": "The database file {where} is not a SQLite database, so RefSheet Chat left it alone. Move it "
        "elsewhere (or set REFSHEET_DATA_DIR or DATABASE_URL to another place) and start the app again.",
        "zh": "数据库文件 {where} 不是 SQLite 数据库，RefSheet Chat 没有改动它。请把它移到别处（或将 REFSHEET_DATA_DIR "
        "或 DATABASE_URL 设为其他位置），然后重新启动应用。",
    },
    "database.damaged": {
        "en": "The database file {where} is damaged and cannot be read ({detail}); it was not changed. Restore "
        "it from a backup, or move it aside to start with an empty library.",
        "zh": "数据库文件 {where} 已损坏，无法读取（{detail}）；它没有被改动。"
        "请从备份恢复，或把它移开以使用空的角色库。",
    },
    "database.foreign": {
        "en": "The database {where} belongs to another program (it holds tables such as {detail}), so RefSheet "
        "Chat did not touch it. Point REFSHEET_DATA_DIR or DATABASE_URL at a database of its own.",
        "zh": "数据库 {where} 属于其他程序（其中有 {detail} 等表），RefSheet Chat 没有改动它。"
        "请将 REFSHEET_DATA_DIR 或 DATABASE_URL 指向它自己的数据库。",
    },
    "database.newer": {
        "en": "The database {where} was made by a newer version of RefSheet Chat (schema {detail}). Update the "
        "app; the database was not changed.",
        "zh": "数据库 {where} 由更新版本的 RefSheet Chat 创建（结构版本 {detail}）。请更新应用；数据库没有被改动。",
    },
    "database.unreachable": {
        "en": "The database at {where} cannot be reached ({detail}). Check DATABASE_URL and that the database "
        "server is running.",
        "zh": "无法连接位于 {where} 的数据库（{detail}）。请检查 DATABASE_URL，并确认数据库服务器正在运行。",
    },
    "storage.full": {
        "en": "The disk that holds RefSheet Chat's data is full, so this was not saved. Everything saved "
        "before is intact. Free some space (or move REFSHEET_DATA_DIR to a larger disk) and try again.",
        "zh": "存放 RefSheet Chat 数据的磁盘已满，因此这次操作没有保存。之前保存的内容完好无损。"
        "请释放一些空间（或把 REFSHEET_DATA_DIR 移到更大的磁盘）后重试。",
    },
    # Shared.
    "ui.language": {"en": "Language", "zh": "界面语言"},
    # Read the sheet: a profile drafted from the pictures.
    "draft.title": {"en": "Read the sheet", "zh": "读取设定图"},
    "draft.why": {
        "en": "The model looks at the pictures and your notes and drafts the profile below, in the reply language. "
        "Check and edit every field before saving.",
        "zh": "模型会查看图片和你的备注，用回复语言起草下方的角色资料。保存前请检查并修改每一项。",
    },
    "draft.all": {"en": "Draft the profile", "zh": "起草角色资料"},
    "draft.one_field": {"en": "Or one field", "zh": "或只起草一项"},
    "draft.again": {"en": "Draft this field", "zh": "起草此项"},
    "draft.needs_sheet": {"en": "Upload the main reference sheet first.", "zh": "请先上传主设定图。"},
    "draft.reading": {"en": "Reading the sheet…", "zh": "正在读取设定图…"},
    "draft.progress": {"en": "{found} of {total} fields drafted", "zh": "已起草 {found}/{total} 项"},
    "draft.done": {
        "en": "Drafted {count} fields: {fields}. Check them below and edit before saving.",
        "zh": "已起草 {count} 项：{fields}。请在下方检查并修改后再保存。",
        "en_one": "Drafted {fields}. Check it below and edit before saving.",
    },
    "draft.stopped": {
        "en": "Stopped. {count} fields were drafted before that: {fields}.",
        "zh": "已停止。停止前起草了 {count} 项：{fields}。",
        "en_one": "Stopped. {fields} was drafted before that.",
    },
    "draft.unreadable": {
        "en": "The model's answer was not a profile the app could read, so it was added to the notes as text.",
        "zh": "模型的回答无法读取为角色资料，已作为文本添加到备注中。",
    },
    "draft.nothing": {"en": "The model wrote nothing. Try again.", "zh": "模型没有写出任何内容。请重试。"},
    "draft.leftover_heading": {"en": "From reading the sheet:", "zh": "读取设定图所得："},
    # The desktop window's own screens (desktop/): first run, starting, its menu.
    "firstrun.intro": {
        "en": "Which model should play your characters? You can change this later (menu: Choose the model…). "
        "Nothing leaves this computer unless you choose a model server elsewhere.",
        "zh": "由哪个模型来扮演你的角色？之后可以更改（菜单：选择模型…）。"
        "除非你选择其他机器上的模型服务器，否则任何内容都不会离开这台电脑。",
    },
    "firstrun.folder": {"en": "A model folder on this computer", "zh": "这台电脑上的模型文件夹"},
    "firstrun.folder_help": {
        "en": "A Gemma 3 checkpoint (4B, 12B or 27B): the folder with its config.json and *.safetensors files.",
        "zh": "Gemma 3 模型（4B、12B 或 27B）：包含 config.json 和 *.safetensors 文件的文件夹。",
    },
    "firstrun.choose_folder": {"en": "Choose folder…", "zh": "选择文件夹…"},
    "firstrun.hub": {"en": "Download a model from the Hugging Face hub", "zh": "从 Hugging Face 模型仓库下载模型"},
    "firstrun.hub_id": {"en": "Hub id", "zh": "模型 ID"},
    "firstrun.gated": {
        "en": "Gemma is a gated model. Once, before the download:",
        "zh": "Gemma 是受限模型。下载前需完成一次：",
    },
    "firstrun.step_sign_in": {
        "en": "sign in (or sign up) at huggingface.co;",
        "zh": "在 huggingface.co 登录（或注册）；",
    },
    "firstrun.step_licence": {
        "en": "open the model's page (huggingface.co/google/gemma-3-4b-it) and accept Google's Gemma licence;",
        "zh": "打开模型页面（huggingface.co/google/gemma-3-4b-it），接受 Google 的 Gemma 许可；",
    },
    "firstrun.step_token": {
        "en": "create a read token at huggingface.co/settings/tokens and paste it here.",
        "zh": "在 huggingface.co/settings/tokens 创建一个 read 令牌，并粘贴到这里。",
    },
    "firstrun.token_kept": {
        "en": "Kept in your own settings folder, readable by you only; never in the app's files. The download "
        "(several GB) starts in the background when you press Start.",
        "zh": "令牌保存在你自己的设置文件夹中，仅你可读，绝不写入应用文件。按下“开始”后，下载（数 GB）会在后台进行。",
    },
    "firstrun.server": {"en": "A model server (OpenAI-compatible)", "zh": "模型服务器（兼容 OpenAI）"},
    "firstrun.server_help": {
        "en": "Ollama, vLLM, llama.cpp, LM Studio, OpenRouter…",
        "zh": "Ollama、vLLM、llama.cpp、LM Studio、OpenRouter…",
    },
    "firstrun.address": {"en": "Address", "zh": "地址"},
    "firstrun.model": {"en": "Model", "zh": "模型"},
    "firstrun.api_key": {"en": "API key, if it wants one", "zh": "API 密钥（如需要）"},
    "firstrun.start": {"en": "Start", "zh": "开始"},
    "firstrun.token_saved": {
        "en": " (a token is saved; leave empty to keep it)",
        "zh": "（已保存令牌；留空则保留）",
    },
    "firstrun.key_saved": {"en": " (a key is saved; leave empty to keep it)", "zh": "（已保存密钥；留空则保留）"},
    "firstrun.error.no_folder": {
        "en": "Choose the folder that holds the model (its config.json and *.safetensors files).",
        "zh": "请选择存放模型的文件夹（包含 config.json 和 *.safetensors 文件）。",
    },
    "firstrun.error.folder_missing": {"en": "The folder {folder} does not exist.", "zh": "文件夹 {folder} 不存在。"},
    "firstrun.error.no_config": {
        "en": "{folder} has no config.json: choose the folder that holds the checkpoint's config.json and "
        "*.safetensors files (a Gemma 3 checkpoint: 4B, 12B or 27B).",
        "zh": "{folder} 中没有 config.json：请选择包含模型 config.json 和 *.safetensors 文件的文件夹"
        "（Gemma 3 模型：4B、12B 或 27B）。",
    },
    "firstrun.error.hub_id": {
        "en": "A hub id reads owner/name, for example google/gemma-3-4b-it.",
        "zh": "模型 ID 的格式是 所有者/名称，例如 google/gemma-3-4b-it。",
    },
    "firstrun.error.address": {
        "en": "The server's address starts with http:// or https://, e.g. http://localhost:11434/v1.",
        "zh": "服务器地址须以 http:// 或 https:// 开头，例如 http://localhost:11434/v1。",
    },
    "firstrun.error.model": {
        "en": "Name the model on that server, e.g. gemma3:4b (Ollama) or google/gemma-3-27b-it.",
        "zh": "请填写该服务器上的模型名称，例如 gemma3:4b（Ollama）或 google/gemma-3-27b-it。",
    },
    "firstrun.error.way": {"en": "Choose one of the three ways.", "zh": "请选择三种方式之一。"},
    "desktop.starting": {"en": "Starting…", "zh": "正在启动…"},
    "desktop.failed": {"en": "RefSheet Chat could not start", "zh": "RefSheet Chat 无法启动"},
    "desktop.choose_model": {"en": "Choose the model…", "zh": "选择模型…"},
    "desktop.quit": {"en": "Quit", "zh": "退出"},
    # The user's persona.
    "persona.button": {"en": "You: {name}", "zh": "你：{name}"},
    "persona.nobody": {"en": "set your name", "zh": "设置你的名字"},
    "persona.why": {
        "en": "Who you are to the characters. They call you by this name ({{user}} in cards) and know what you "
        "write here, from their next reply on.",
        "zh": "你在角色眼中的身份。角色会用这个名字称呼你（即角色卡中的 {{user}}），"
        "并了解你在此写下的内容，从下一次回复起生效。",
    },
    "persona.name": {"en": "Your name", "zh": "你的名字"},
    "persona.name_placeholder": {"en": "e.g. Alex", "zh": "例如：小林"},
    "persona.description": {"en": "About you (optional)", "zh": "关于你（可选）"},
    "persona.description_placeholder": {
        "en": "e.g. A travelling painter who has just arrived in town.",
        "zh": "例如：刚到镇上的旅行画家。",
    },
    "persona.saved": {"en": "Saved: the characters know you by your new name.", "zh": "已保存：角色会用新名字称呼你。"},
    "common.cancel": {"en": "Cancel", "zh": "取消"},
    "common.delete": {"en": "Delete", "zh": "删除"},
    "common.save": {"en": "Save", "zh": "保存"},
    "common.unnamed": {"en": "Unnamed character", "zh": "未命名角色"},
    "common.last_activity": {"en": "Last activity {when}", "zh": "最近活动 {when}"},
    # Model status.
    "model.ready": {
        "en": "Model ready: {description}",
        "zh": "模型已就绪：{description}",
    },
    "model.loading": {"en": "Loading the model: {phase}", "zh": "正在加载模型：{phase}"},
    "model.not_loaded": {
        "en": "Model {source} is not loaded yet; it loads when the first reply is needed.",
        "zh": "模型 {source} 尚未加载；需要第一条回复时才会加载。",
    },
    "model.cache": {
        "en": "KV cache: {entries} kept · reused {hits}× for a conversation and {prefix_hits}× for a character "
        "({disk_loads} read from disk) · computed afresh {misses}× · {megabytes} MB of {limit_mb} MB",
        "zh": "KV 缓存：保留 {entries} 个 · 对话复用 {hits} 次 · 角色复用 {prefix_hits} 次"
        "（其中从磁盘读取 {disk_loads} 次） · 重新计算 {misses} 次 · 已用 {megabytes} MB / {limit_mb} MB",
    },
    # Home.
    "home.title": {"en": "RefSheet Chat", "zh": "RefSheet Chat 角色设定图聊天"},
    "home.tagline": {
        "en": "Upload a character's reference sheet and chat with that character.  \n"
        "A local Gemma 3 model looks at the picture and your notes, then talks to you in character, in the "
        "language you choose.",
        "zh": "上传角色设定图，与这个角色聊天。  \n"
        "本地运行的 Gemma 3 模型会看图、读你的备注，然后以角色身份、用你选择的语言和你对话。",
    },
    "home.first.title": {"en": "Create your first character", "zh": "创建你的第一个角色"},
    "home.first.steps": {
        "en": "1. Upload the character's reference sheet (PNG, JPEG, WebP, BMP or GIF).\n"
        "2. Add what the picture does not show: name, personality, habits, past.\n"
        "3. Pick the language the character should speak, and start chatting.",
        "zh": "1. 上传角色设定图（PNG、JPEG、WebP、BMP 或 GIF）。\n2. 补充图上看不出的信息：名字、性格、习惯、经历。\n"
        "3. 选择角色说话的语言，开始聊天。",
    },
    "home.first.button": {"en": "Create a character", "zh": "创建角色"},
    "home.new_character": {"en": "New character", "zh": "新建角色"},
    "home.open_library": {"en": "Character library", "zh": "角色库"},
    "home.recent": {"en": "Continue a conversation", "zh": "继续对话"},
    "home.continue": {"en": "Continue", "zh": "继续"},
    "home.model": {"en": "Model", "zh": "模型"},
    # Create.
    "create.title": {"en": "Create a character", "zh": "创建角色"},
    "create.main_sheet": {"en": "Main reference sheet (required)", "zh": "主设定图（必填）"},
    "create.main_help": {
        "en": "The picture the character is based on: design, colours, labels.",
        "zh": "角色所依据的图片：造型、配色、标注。",
    },
    "create.extra_images": {"en": "More reference images (optional)", "zh": "更多参考图（可选）"},
    "create.extra_help": {"en": "Other angles, expressions, outfits.", "zh": "其他角度、表情、服装。"},
    "upload.limit": {
        "en": "PNG, JPEG, WebP, BMP or GIF, up to {mb} MB each.",
        "zh": "支持 PNG、JPEG、WebP、BMP 或 GIF，每个不超过 {mb} MB。",
    },
    "create.main_caption": {"en": "Main sheet", "zh": "主设定图"},
    "create.more": {"en": "More details (optional)", "zh": "更多设定（可选）"},
    "create.submit": {"en": "Create character", "zh": "创建角色"},
    "create.fix_uploads": {
        "en": "Some images cannot be used (see above). Remove or replace them; nothing was saved.",
        "zh": "部分图片无法使用（见上文）。请移除或替换；尚未保存任何内容。",
    },
    "create.done": {"en": "{name} is ready.", "zh": "{name} 已创建。"},
    "create.start_chatting": {"en": "Start chatting", "zh": "开始聊天"},
    "create.another": {"en": "Create another", "zh": "再创建一个"},
    # Character fields: the label, and optional help and placeholder.
    "field.name": {"en": "Name", "zh": "名字"},
    "field.name.placeholder": {"en": "Leave empty to let the sheet speak for itself", "zh": "留空则由设定图决定"},
    "field.notes": {"en": "Notes", "zh": "备注"},
    "field.notes.placeholder": {
        "en": "Things the picture does not show: name, personality, habits, past…",
        "zh": "图上看不出的信息：名字、性格、习惯、经历……",
    },
    "field.language": {"en": "The character replies in", "zh": "角色回复使用的语言"},
    "field.first_mes": {"en": "Greeting (first message)", "zh": "开场白（第一条消息）"},
    "field.first_mes.help": {
        "en": "Leave empty and the character greets you in its own words, from the sheet.",
        "zh": "留空则由角色根据设定图自行打招呼。",
    },
    "field.alternate_greetings": {"en": "Alternate greetings", "zh": "备选开场白"},
    "field.alternate_greetings.help": {
        "en": "Separate greetings with a line holding only ---",
        "zh": "各开场白之间用仅含 --- 的一行分隔",
    },
    "field.description": {"en": "Description", "zh": "描述"},
    "field.personality": {"en": "Personality", "zh": "性格"},
    "field.scenario": {"en": "Scenario", "zh": "场景"},
    "field.mes_example": {"en": "Example dialogue", "zh": "对话示例"},
    "field.system_prompt": {"en": "System prompt", "zh": "系统提示词"},
    "field.post_history_instructions": {"en": "Post-history instructions", "zh": "历史后指令"},
    "field.creator_notes": {"en": "Creator notes (never shown to the model)", "zh": "作者备注（不会发送给模型）"},
    "field.tags": {"en": "Tags (comma separated)", "zh": "标签（逗号分隔）"},
    "field.creator": {"en": "Creator", "zh": "作者"},
    "field.character_version": {"en": "Version", "zh": "版本"},
    # Library.
    "library.title": {"en": "Character library", "zh": "角色库"},
    "library.search": {"en": "Search", "zh": "搜索"},
    "library.search_placeholder": {"en": "Name or notes", "zh": "名字或备注"},
    "library.empty": {"en": "No characters yet.", "zh": "还没有角色。"},
    "library.none_found": {"en": "No character matches that search.", "zh": "没有符合搜索条件的角色。"},
    "library.card_meta": {
        "en": "{language} · {count} conversations · {when}",
        "en_one": "{language} · 1 conversation · {when}",
        "zh": "{language} · {count} 个对话 · {when}",
    },
    "library.chat": {"en": "Chat", "zh": "聊天"},
    "chat.show_earlier": {"en": "Show earlier messages", "zh": "显示更早的消息"},
    "library.page": {
        "en": "Page {page} of {pages} · {count} characters",
        "zh": "第 {page} / {pages} 页 · 共 {count} 个角色",
    },
    "library.previous": {"en": "Previous", "zh": "上一页"},
    "library.next": {"en": "Next", "zh": "下一页"},
    "library.edit": {"en": "Edit", "zh": "编辑"},
    "library.duplicate": {"en": "Copy", "zh": "复制"},
    "library.copy_suffix": {"en": " (copy)", "zh": "（副本）"},
    "library.delete_title": {"en": "Delete this character?", "zh": "删除这个角色？"},
    "library.delete_body": {
        "en": "“{name}” will be deleted with its images and {count} conversations. This cannot be undone.",
        "en_one": "“{name}” will be deleted with its images and its conversation. This cannot be undone.",
        "zh": "“{name}” 及其图片和 {count} 个对话都将被删除，且无法恢复。",
    },
    "library.deleted": {"en": "Deleted {name}.", "zh": "已删除 {name}。"},
    "library.back": {"en": "Back to the library", "zh": "返回角色库"},
    "library.saved": {"en": "Saved.", "zh": "已保存。"},
    "library.images": {"en": "Reference images", "zh": "参考图"},
    "library.book": {
        "en": "Character book: {count} entries, used when a conversation mentions their keys",
        "en_one": "Character book: 1 entry, used when a conversation mentions its keys",
        "zh": "角色知识书：{count} 条，对话提到关键词时使用",
    },
    "library.book_always": {"en": "always known", "zh": "始终知道"},
    "library.make_main": {"en": "Make main", "zh": "设为主图"},
    "library.remove_image": {"en": "Remove", "zh": "移除"},
    "library.add_images": {"en": "Add images", "zh": "添加图片"},
    "library.add_button": {"en": "Add these images", "zh": "添加这些图片"},
    # Chat.
    "chat.title": {"en": "Chat", "zh": "聊天"},
    "chat.no_characters": {
        "en": "There is nobody to talk to yet: create a character first.",
        "zh": "还没有可以聊天的角色：请先创建一个。",
    },
    "chat.character": {"en": "Character", "zh": "角色"},
    "chat.conversations": {"en": "Conversations", "zh": "对话"},
    "chat.new": {"en": "New conversation", "zh": "新对话"},
    "chat.untitled": {"en": "New conversation", "zh": "新对话"},
    "chat.this_conversation": {"en": "This conversation", "zh": "当前对话"},
    "chat.rename": {"en": "Title", "zh": "标题"},
    "chat.delete": {"en": "Delete conversation", "zh": "删除对话"},
    "chat.delete_title": {"en": "Delete this conversation?", "zh": "删除这个对话？"},
    "chat.delete_body": {
        "en": "“{title}” and all its messages will be deleted. This cannot be undone.",
        "zh": "“{title}” 及其所有消息都将被删除，且无法恢复。",
    },
    "chat.settings": {"en": "Reply settings", "zh": "回复设置"},
    # Chats as files (core.formats.chat_files): export, import, and the errors that name the file and line.
    "chatfile.export_md": {"en": "Download as Markdown", "zh": "下载为 Markdown"},
    "chatfile.export_jsonl": {"en": "Download for SillyTavern (JSONL)", "zh": "下载为 SillyTavern 聊天（JSONL）"},
    "chatfile.import": {"en": "Import a SillyTavern chat (.jsonl)", "zh": "导入 SillyTavern 聊天（.jsonl）"},
    "chatfile.import_help": {
        "en": "It becomes a new conversation with this character; alternatives (swipes) are kept.",
        "zh": "将成为与该角色的新对话；备选回复（swipes）会保留。",
    },
    "chatfile.imported": {
        "en": "Imported “{title}”: {count} messages.",
        "en_one": "Imported “{title}”: 1 message.",
        "zh": "已导入 “{title}”：{count} 条消息。",
    },
    "chatfile.skipped_system": {
        "en": "{count} system notes were left out (SillyTavern keeps them out of the prompt too).",
        "en_one": "1 system note was left out (SillyTavern keeps it out of the prompt too).",
        "zh": "已略过 {count} 条系统消息（SillyTavern 也不会把它们放进提示词）。",
    },
    "chatfile.too_large": {
        "en": "“{name}” is {size_mb} MB; a chat file can be at most {limit_mb} MB.",
        "zh": "“{name}” 有 {size_mb} MB，聊天文件最大 {limit_mb} MB。",
    },
    "chatfile.not_text": {
        "en": "“{name}” is not a text file, so it is not a SillyTavern chat (.jsonl).",
        "zh": "“{name}” 不是文本文件，因此不是 SillyTavern 聊天（.jsonl）。",
    },
    "chatfile.not_json": {
        "en": "“{name}”, line {line}: this is not JSON. A SillyTavern chat (.jsonl) has one JSON object per line.",
        "zh": "“{name}” 第 {line} 行不是 JSON。SillyTavern 聊天（.jsonl）每行一个 JSON 对象。",
    },
    "chatfile.not_object": {
        "en": "“{name}”, line {line}: expected a chat message (a JSON object {{…}}), found something else.",
        "zh": "“{name}” 第 {line} 行：应为一条聊天消息（JSON 对象 {{…}}），但不是。",
    },
    "chatfile.not_chat": {
        "en": "“{name}” is not a SillyTavern chat: its first line is neither a chat header (user_name, "
        "character_name) nor a message.",
        "zh": "“{name}” 不是 SillyTavern 聊天：第一行既不是聊天头（user_name、character_name），也不是消息。",
    },
    "chatfile.not_message": {
        "en": "“{name}”, line {line}: a message without its text (“mes”).",
        "zh": "“{name}” 第 {line} 行：消息缺少正文（“mes”）。",
    },
    "chatfile.too_many": {
        "en": "“{name}” has more than {limit} messages or alternatives. Split the chat in SillyTavern first.",
        "zh": "“{name}” 的消息或备选回复超过 {limit} 条。请先在 SillyTavern 中拆分该聊天。",
    },
    "chatfile.empty": {"en": "“{name}” has no messages to import.", "zh": "“{name}” 中没有可导入的消息。"},
    "chatfile.md.between": {
        "en": "A conversation between {user} and {character}, started {date}.",
        "zh": "{user} 与 {character} 的对话，开始于 {date}。",
    },
    "chatfile.md.alternatives": {
        "en": "{count} other alternatives",
        "en_one": "1 other alternative",
        "zh": "另有 {count} 个备选回复",
    },
    "chatfile.md.alternative": {"en": "Alternative {number} of {total}", "zh": "备选 {number}/{total}"},
    "chatfile.md.image": {"en": "[image]", "zh": "[图片]"},
    "chat.settings_saved": {"en": "Reply settings saved.", "zh": "回复设置已保存。"},
    "chat.loading_model": {"en": "Loading the model (first reply only)…", "zh": "正在加载模型（仅第一次回复）…"},
    "chat.model_failed": {"en": "The model could not be loaded", "zh": "模型加载失败"},
    "chat.model_ready": {"en": "Model loaded", "zh": "模型已加载"},
    "chat.retry_model": {"en": "Try loading the model again", "zh": "重新加载模型"},
    "chat.stop": {"en": "Stop", "zh": "停止"},
    "chat.partial": {"en": "Unfinished: stopped before the end.", "zh": "未完成：在结束前被停止。"},
    "chat.writing": {
        "en": "Being written right now… (this refreshes by itself)",
        "zh": "正在生成中…（会自动刷新）",
    },
    "chat.failed": {"en": "This reply failed: {reason}", "zh": "此回复生成失败：{reason}"},
    "chat.previous": {"en": "Previous alternative", "zh": "上一个版本"},
    "chat.next": {"en": "Next alternative", "zh": "下一个版本"},
    "chat.regenerate": {"en": "Regenerate", "zh": "重新生成"},
    "chat.continue": {"en": "Continue", "zh": "继续写"},
    "chat.edit": {"en": "Edit", "zh": "编辑"},
    "chat.edit_label": {"en": "Your message", "zh": "你的消息"},
    "chat.resend": {"en": "Save and resend", "zh": "保存并重新发送"},
    "chat.delete_message": {"en": "Delete", "zh": "删除"},
    "chat.stats.waited": {"en": "waited {seconds} s for the model", "zh": "排队等待 {seconds} 秒"},
    "chat.stats.stopped": {
        "en": "stopped after {count} tokens",
        "en_one": "stopped after 1 token",
        "zh": "在第 {count} 个 token 后停止",
    },
    "chat.stats.speed": {
        "en": "first token {ttft} s · {tps} tokens/s",
        "zh": "首个 token {ttft} 秒 · 每秒 {tps} 个 token",
    },
    "chat.stats.prompt": {
        "en": "{prompt} prompt tokens ({cached} from cache)",
        "zh": "提示 {prompt} 个 token（缓存 {cached} 个）",
    },
    "chat.trimmed": {
        "en": "The conversation is longer than the model's context: the {count} oldest messages were left out of "
        "this reply (the character and its sheets never are).",
        "en_one": "The conversation is longer than the model's context: the oldest message was left out of this "
        "reply (the character and its sheets never are).",
        "zh": "对话已超出模型的上下文长度：这次回复没有看到最早的 {count} 条消息（角色设定和设定图始终保留）。",
    },
    "chat.placeholder": {"en": "Message {name}… (you can attach images)", "zh": "给 {name} 发消息…（可附图片）"},
    "chat.not_sent": {"en": "Your message was not sent: “{text}”", "zh": "你的消息未发送：“{text}”"},
    "chat.not_sent_empty": {"en": "Your images were not sent.", "zh": "你的图片未发送。"},
    "chat.get_reply": {"en": "Get a reply", "zh": "获取回复"},
    # Sampler labels.
    "sampler.label.temperature": {"en": "Temperature", "zh": "温度"},
    "sampler.help.temperature": {
        "en": "Higher is more surprising; 0 always picks the most likely word.",
        "zh": "越高越多变；0 表示总选最可能的词。",
    },
    "sampler.label.top_p": {"en": "Top-p", "zh": "Top-p"},
    "sampler.label.top_k": {"en": "Top-k (0 = off)", "zh": "Top-k（0 = 关闭）"},
    "sampler.label.max_new_tokens": {"en": "Longest reply (tokens)", "zh": "最长回复（token）"},
    "sampler.label.repetition_penalty": {"en": "Repetition penalty", "zh": "重复惩罚"},
    "sampler.label.fixed_seed": {"en": "Fixed seed (repeatable replies)", "zh": "固定随机种子（可复现）"},
    "sampler.label.seed": {"en": "Seed", "zh": "随机种子"},
    "nav.home": {"en": "Home", "zh": "首页"},
    "nav.create": {"en": "Create", "zh": "创建"},
    "nav.library": {"en": "Library", "zh": "角色库"},
    "nav.chat": {"en": "Chat", "zh": "聊天"},
    "sampler.min_new_tokens": {
        "en": "The shortest reply must be between 0 and the longest reply; got {value}.",
        "zh": "最短回复必须在 0 到最长回复之间；当前为 {value}。",
    },
    # Zip files (CHARX cards, backups).
    "archive.not_zip": {
        "en": "“{name}” is not a zip file (or it is damaged), so it cannot be opened.",
        "zh": "“{name}” 不是 zip 文件（或已损坏），无法打开。",
    },
    "archive.unsafe_path": {
        "en": "“{name}” holds a file named “{member}”, which would land outside its folder; nothing was read.",
        "zh": "“{name}” 中有名为 “{member}” 的文件，会被解压到目录之外；未读取任何内容。",
    },
    "archive.duplicate": {
        "en": "“{name}” holds two files named “{member}”, so which one is meant cannot be told; nothing was read.",
        "zh": "“{name}” 中有两个名为 “{member}” 的文件，无法判断该用哪一个；未读取任何内容。",
    },
    "archive.too_many": {
        "en": "“{name}” holds {count} files; the limit is {limit}. Nothing was read.",
        "zh": "“{name}” 包含 {count} 个文件，上限为 {limit}。未读取任何内容。",
    },
    "archive.too_large": {
        "en": "“{name}” unpacks to more than {limit_mb} MB (at “{member}”); nothing was read.",
        "zh": "“{name}” 解压后超过 {limit_mb} MB（在 “{member}” 处）；未读取任何内容。",
    },
    "archive.damaged": {
        "en": "“{member}” inside “{name}” is damaged and cannot be unpacked; nothing was read.",
        "zh": "“{name}” 中的 “{member}” 已损坏，无法解压；未读取任何内容。",
    },
    # Library backup and restore.
    "backup.not_backup": {
        "en": "“{name}” is not a RefSheet Chat backup (it has no readable manifest.json). Nothing was restored.",
        "zh": "“{name}” 不是 RefSheet Chat 备份（没有可读取的 manifest.json）。未恢复任何内容。",
    },
    "backup.newer": {
        "en": "“{name}” was made by a newer version of RefSheet Chat (backup format {version}). Update the app, "
        "then restore it. Nothing was restored.",
        "zh": "“{name}” 由更新版本的 RefSheet Chat 生成（备份格式 {version}）。请先更新应用再恢复。未恢复任何内容。",
    },
    "backup.missing": {
        "en": "“{member}” is missing from “{name}”: the backup is incomplete. Nothing was restored.",
        "zh": "“{name}” 中缺少 “{member}”：备份不完整。未恢复任何内容。",
    },
    "backup.checksum": {
        "en": "“{member}” in “{name}” does not match its checksum: the file is damaged or was changed. "
        "Nothing was restored.",
        "zh": "“{name}” 中的 “{member}” 与校验和不符：文件已损坏或被改动。未恢复任何内容。",
    },
    "backup.unlisted": {
        "en": "“{name}” holds “{member}”, which its manifest does not list: the file was changed. "
        "Nothing was restored.",
        "zh": "“{name}” 中有清单未列出的 “{member}”：文件被改动过。未恢复任何内容。",
    },
    "backup.bad_rows": {
        "en": "“{member}” in “{name}” (line {line}) holds data that cannot be restored: {detail}. "
        "Nothing was restored.",
        "zh": "“{name}” 中的 “{member}”（第 {line} 行）包含无法恢复的数据：{detail}。未恢复任何内容。",
    },
    "backup.bad_image": {
        "en": "The picture “{member}” in “{name}” is damaged, incomplete or not the image its row describes. "
        "Nothing was restored.",
        "zh": "“{name}” 中的图片 “{member}” 已损坏、不完整或与其记录不符。未恢复任何内容。",
    },
    "backup.title": {"en": "Backup and restore", "zh": "备份与恢复"},
    "backup.scope_own": {
        "en": "A backup holds your characters and your conversations (with every image) in one zip file. "
        "Restoring one adds only what this library lacks, as yours.",
        "zh": "备份会把你的角色和你的对话（含所有图片）存成一个 zip 文件。恢复时只添加本角色库中没有的内容，归你所有。",
    },
    "backup.whole_server": {
        "en": "“{name}” is a backup of the whole server, with everyone's conversations, so it cannot be restored "
        "here. The server's operator restores it on the server: python -m core.services.server_backup restore FILE. "
        "Nothing was restored.",
        "zh": "“{name}” 是整个服务器的备份，含所有人的对话，因此不能在这里恢复。请服务器管理员在服务器上运行 "
        "python -m core.services.server_backup restore FILE 来恢复。未恢复任何内容。",
    },
    "backup.download": {"en": "Download a backup", "zh": "下载备份"},
    "backup.upload": {"en": "Restore from a backup (.zip)", "zh": "从备份恢复（.zip）"},
    "backup.restore": {"en": "Restore", "zh": "恢复"},
    "backup.report": {
        "en": "Restored “{name}”: {characters} characters added ({characters_skipped} already here), "
        "{conversations} conversations added ({conversations_skipped} already here), {messages} messages and "
        "{images} images.",
        "zh": "已恢复 “{name}”：新增 {characters} 个角色（{characters_skipped} 个已存在），新增 {conversations} 个对话"
        "（{conversations_skipped} 个已存在），{messages} 条消息，{images} 张图片。",
    },
    "backup.unattached": {
        "en": "{count} conversations were left out: their character is not in this library, or not one you may see.",
        "en_one": "1 conversation was left out: its character is not in this library, or not one you may see.",
        "zh": "有 {count} 个对话未恢复：其角色不在本角色库中，或你无权查看。",
    },
    # Character cards.
    "card.not_card": {
        "en": "“{name}” is not a character card. Import a Tavern card: a PNG with card data, or its .json file.",
        "zh": "“{name}” 不是角色卡。请导入 Tavern 角色卡：带角色数据的 PNG 或其 .json 文件。",
    },
    "card.no_card": {
        "en": "“{name}” is a picture without character card data. Upload it as a reference sheet instead.",
        "zh": "“{name}” 是一张没有角色卡数据的图片。请把它作为设定图上传。",
    },
    "card.too_large": {
        "en": "The character card in “{name}” is far larger than any card (over 16 MB of text); it was not read.",
        "zh": "“{name}” 中的角色卡远大于正常的角色卡（文本超过 16 MB），未读取。",
    },
    "card.too_deep": {
        "en": "The character card in “{name}” nests its data too deeply to be a real card; it was not read.",
        "zh": "“{name}” 中的角色卡数据嵌套过深，不像是真正的角色卡，未读取。",
    },
    "card.warning.made_text": {
        "en": "The card's “{field}” was a number; it is kept as text.",
        "zh": "角色卡的 “{field}” 是数字，已作为文本保留。",
    },
    "card.warning.cut": {
        "en": "The card's “{field}” was longer than {limit} characters; the rest was left out.",
        "zh": "角色卡的 “{field}” 超过 {limit} 个字符，其余部分已略去。",
    },
    "card.warning.left_out": {
        "en": "The card's “{field}” was not of a kind a card carries there; it was left out.",
        "zh": "角色卡的 “{field}” 的类型不正确，已略去。",
    },
    "card.warning.split": {
        "en": "The card's “{field}” was one text; it was split at the commas.",
        "zh": "角色卡的 “{field}” 是一段文本，已按逗号拆分。",
    },
    "card.warning.one_item": {
        "en": "The card's “{field}” was one text instead of a list; it is kept as one item.",
        "zh": "角色卡的 “{field}” 是一段文本而非列表，已作为一项保留。",
    },
    "card.warning.some_left_out": {
        "en": "{count} items of the card's “{field}” were not text; they were left out.",
        "zh": "角色卡 “{field}” 中有 {count} 项不是文本，已略去。",
    },
    "card.warning.book_list": {
        "en": "The card's character book was a bare list of entries; it was read as a book.",
        "zh": "角色卡的角色知识书只是条目列表，已按知识书读取。",
    },
    "card.warning.book_entries": {
        "en": "{count} entries of the card's character book have no keys or no content; the character will not "
        "use them.",
        "zh": "角色卡的角色知识书中有 {count} 条没有关键词或内容，角色不会使用它们。",
    },
    "card.unreadable": {
        "en": "The character card in “{name}” is damaged and cannot be read.",
        "zh": "“{name}” 中的角色卡已损坏，无法读取。",
    },
    "card.charx_no_card": {
        "en": "“{name}” is a zip without a card.json at its root, so it is not a CHARX character card.",
        "zh": "“{name}” 是一个根目录下没有 card.json 的 zip 文件，不是 CHARX 角色卡。",
    },
    "card.charx_not_v3": {
        "en": "The card.json in “{name}” is not a Character Card V3, which a CHARX file must hold.",
        "zh": "“{name}” 中的 card.json 不是 CHARX 文件必须包含的 V3 角色卡（Character Card V3）。",
    },
    "card.export_too_large": {
        "en": "“{name}” has too many or too large reference images for a PNG card (its card data would pass "
        "16 MB, more than card readers take). Export it as CHARX, which carries every image.",
        "zh": "“{name}” 的参考图太多或太大，无法放进 PNG 角色卡（卡片数据会超过 16 MB，超出读卡程序的上限）。"
        "请导出为 CHARX，它能带上每一张图。",
    },
    "card.warning.picture_missing": {
        "en": "The card's reference image “{picture}” has no readable picture data; it was left out.",
        "zh": "角色卡的参考图 “{picture}” 没有可读取的图片数据，已略去。",
    },
    "card.warning.assets_dropped": {
        "en": "{count} of the card's other assets ({names}) are missing from the file or too large to keep; "
        "they were left out and will not be in an export.",
        "zh": "角色卡的 {count} 个其他资源（{names}）在文件中缺失或过大无法保留，已略去，导出时也不会包含。",
    },
    "create.import_card": {
        "en": "Import a character card (optional: SillyTavern PNG, JSON or CHARX)",
        "zh": "导入角色卡（可选：SillyTavern 的 PNG、JSON 或 CHARX）",
    },
    "create.card_loaded": {
        "en": "Card “{name}” loaded: its fields fill the form below, and its picture is the main sheet unless you "
        "upload one.",
        "zh": "已载入角色卡 “{name}”：表单已按卡片填写；若不另传设定图，卡片图片即为主设定图。",
    },
    "create.card_picture": {"en": "Card picture", "zh": "角色卡图片"},
    "library.export_card": {"en": "Export character card (PNG)", "zh": "导出角色卡（PNG）"},
    "library.export_charx": {"en": "Export character card (CHARX)", "zh": "导出角色卡（CHARX）"},
    "library.png_too_large": {
        "en": "Too many or too large reference images for a PNG card (over 16 MB of card data); export CHARX.",
        "zh": "参考图太多或太大，无法放进 PNG 角色卡（卡片数据超过 16 MB）；请导出 CHARX。",
    },
}


@dataclass(frozen=True)
class Text:
    """A sentence to show later, in the viewer's language: an i18n key and its parameters.

    Statuses, progress phases and errors carry these instead of finished sentences, so one server
    can tell two viewers the same thing in two languages."""

    key: str
    params: dict[str, Any] = field(default_factory=dict)

    def render(self, lang: str = "en") -> str:
        return t(self.key, lang, **self.params)

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "params": dict(self.params)}


def known(key: str) -> bool:
    """Whether `key` names a string (a stored one, read back from a database or a backup, may not)."""
    return key in STRINGS


class _Params(dict):
    """A parameter a template names but nobody gave (a stored row from another version) reads "?"."""

    def __missing__(self, key: str) -> str:
        return "?"


def t(key: str, lang: str = "en", **params: object) -> str:
    """The string `key` in `lang` (English if missing there), formatted with `params`.

    With `count=1`, a `<lang>_one` form is used where the language has one ("1 conversation").
    A missing parameter reads "?": one odd stored row must not break a page."""
    entry = STRINGS.get(key)
    if entry is None:
        return key
    lang = lang if lang in entry else "en"
    text = entry[lang]
    if params.get("count") == 1:
        text = entry.get(f"{lang}_one", text)
    try:
        return text.format_map(_Params(params))
    except (ValueError, TypeError, IndexError, AttributeError):  # a format spec the value cannot take
        return text.format_map(_Params({name: str(value) for name, value in params.items()}))


def ui_language_for(locale: str | None) -> str:
    """Pick the UI language from a browser locale such as 'zh-CN' or 'en-US'."""
    if locale and locale.lower().startswith("zh"):
        return "zh"
    return "en"
