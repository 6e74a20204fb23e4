"""SGLang runtimes: the client of one (:mod:`.client`), one model's workers behind its entry URL
(:mod:`.workers`), and starting them: one server (:mod:`.server`), pools and pairs of them
(:mod:`.pool`), their processes (:mod:`.process`)."""
