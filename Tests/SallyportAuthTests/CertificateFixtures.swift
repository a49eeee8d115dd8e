/// Certificates and a CRL made once by Tests/Integration/make_pki.py (the DER reader's tests only
/// read them; nothing here is trusted or checked for dates).
enum CertificateFixtures {
    static let alice = """
        -----BEGIN CERTIFICATE-----
        MIIBbDCCAROgAwIBAgIUBqojrMic61yML+nKtTAj312EKJMwCgYIKoZIzj0EAwIw
        HDEaMBgGA1UEAwwRU2FsbHlwb3J0IFRlc3QgQ0EwHhcNMjYxMjAyMTkwNDI1WhcN
        MjcxMjAzMTkwNDI1WjAQMQ4wDAYDVQQDDAVhbGljZTBZMBMGByqGSM49AgEGCCqG
        SM49AwEHA0IABLsMSHroTgvAoMHPM8Do8ZdzivTG5yHL4frcXa3iPCpXtlsBuKZ8
        NJczCZuruYmU/rs07eUEPm0jTG4k+zAIGVejPzA9MAwGA1UdEwEB/wQCMAAwLQYD
        VR0RBCYwJIESYWxpY2VAZXhhbXBsZS50ZXN0hg51cm46dXNlcjphbGljZTAKBggq
        hkjOPQQDAgNHADBEAiBc/T8j48bNXt85OZrjS+vEyqqxHKwPCaN7NliFwQA7kQIg
        RREZ7xJclVl7TTWqaCQKII/qLWgBwE54ZiXafzamfOE=
        -----END CERTIFICATE-----
        """
    static let bob = """
        -----BEGIN CERTIFICATE-----
        MIIBOzCB4qADAgECAhQdOgsky9DGwDgHS/WGcGKrH4388jAKBggqhkjOPQQDAjAc
        MRowGAYDVQQDDBFTYWxseXBvcnQgVGVzdCBDQTAeFw0yNjEyMDIxOTA0MjVaFw0y
        NzEyMDMxOTA0MjVaMA4xDDAKBgNVBAMMA2JvYjBZMBMGByqGSM49AgEGCCqGSM49
        AwEHA0IABPDkfbHljyXKTXWB0z6D0uemy+KMorXD+TRhzrorGgcjIiZrHuG0LURd
        vuSu8vYZg1epiefo2rC4i/U0azK7VNqjEDAOMAwGA1UdEwEB/wQCMAAwCgYIKoZI
        zj0EAwIDSAAwRQIgGoqlFGL0Uw4XWDTvGTwLrY4k1c01/SG/ya7B8HMInOgCIQDs
        GOKzC8TMcUa9MUzMveSUr3CwG1j1Ai+5KgW8spFtkw==
        -----END CERTIFICATE-----
        """
    static let twocn = """
        -----BEGIN CERTIFICATE-----
        MIIBSjCB8qADAgECAhQ0aNEA9ddPeCcAqStrojuwglvWTzAKBggqhkjOPQQDAjAc
        MRowGAYDVQQDDBFTYWxseXBvcnQgVGVzdCBDQTAeFw0yNjEyMDIxOTA0MjVaFw0y
        NzEyMDMxOTA0MjVaMB4xDjAMBgNVBAMMBWFsaWNlMQwwCgYDVQQDDANib2IwWTAT
        BgcqhkjOPQIBBggqhkjOPQMBBwNCAAQ2lKZayHyhJzcURc03SkAYwxgLeGeSPCuY
        NG6AA3ytxSbkbfZeMK8r1J4zu69MDeGDG4T8ikChX+sjJN9ggkLNoxAwDjAMBgNV
        HRMBAf8EAjAAMAoGCCqGSM49BAMCA0cAMEQCIGtTG7iBRYDNdH478VIcP2rgXDxw
        2yBEqHsYp65l8RjlAiBT9Mq/UFIjc5idElkh1QNdc/Hn/pr12r0vsvpSTza7yQ==
        -----END CERTIFICATE-----
        """
    static let crlf = """
        -----BEGIN CERTIFICATE-----
        MIIBSDCB7qADAgECAhQTjuzYDzYLDl8VYWw17V8TFTPM6jAKBggqhkjOPQQDAjAc
        MRowGAYDVQQDDBFTYWxseXBvcnQgVGVzdCBDQTAeFw0yNjEyMDIxOTA0MjVaFw0y
        NzEyMDMxOTA0MjVaMBoxGDAWBgNVBAMMD2V2ZQ0KZW5kPWZvcmdlZDBZMBMGByqG
        SM49AgEGCCqGSM49AwEHA0IABHJZmNAI0ApL9L5hP4QrOKohVfLVMABkrFU7uP9y
        cXWxGNpKxzdbEI9VUPdEEchgNR2d2N3fuyEFte6LSonTPtyjEDAOMAwGA1UdEwEB
        /wQCMAAwCgYIKoZIzj0EAwIDSQAwRgIhALqODUZc2ZcIOjMRh8ay4bOR0XYzgkoG
        d+MARa8ZZ2e7AiEA964boe/XZzY88KH8RCzQGUXtfO6I768SHWcsgV22/YU=
        -----END CERTIFICATE-----
        """
    static let nul = """
        -----BEGIN CERTIFICATE-----
        MIIBQDCB56ADAgECAhR+Sjyx6n6/o62WHeHo7vaVq/+65jAKBggqhkjOPQQDAjAc
        MRowGAYDVQQDDBFTYWxseXBvcnQgVGVzdCBDQTAeFw0yNjEyMDIxOTA0MjVaFw0y
        NzEyMDMxOTA0MjVaMBMxETAPBgNVBAMMCGV2ZQByb290MFkwEwYHKoZIzj0CAQYI
        KoZIzj0DAQcDQgAENhqylFxAsMOLuupxgUBAJ1xx8rlkLyHH1FLrW0sGgDtO74/k
        xrj/vZIwAc1zn0ETF5zBJ2J3xyJj4fmZeBj/56MQMA4wDAYDVR0TAQH/BAIwADAK
        BggqhkjOPQQDAgNIADBFAiB1VjR9jQ2aWGV8R7CqT0EvQStoq0LiROUhSLKjLMLf
        LQIhAIvgVK5a39AOXXHShzJEhbieTAhAoCRxgE1LtFoJuW1m
        -----END CERTIFICATE-----
        """
    static let jose = """
        -----BEGIN CERTIFICATE-----
        MIIBPDCB5KADAgECAhQ3r45LEsKInF96RinYRcIANUMcmjAKBggqhkjOPQQDAjAc
        MRowGAYDVQQDDBFTYWxseXBvcnQgVGVzdCBDQTAeFw0yNjEyMDIxOTA0MjVaFw0y
        NzEyMDMxOTA0MjVaMBAxDjAMBgNVBAMMBUpvc8OpMFkwEwYHKoZIzj0CAQYIKoZI
        zj0DAQcDQgAEYdAD7B9walLTZQb/etydLQvVVBj1lqz+ymA+kuIVo9fleZzACIeG
        IHkZbHh3iaa9UkxcJOVu0pWlHYow4EbVQqMQMA4wDAYDVR0TAQH/BAIwADAKBggq
        hkjOPQQDAgNHADBEAiB1mWBvqek+y6zSxMYTYzugH2yxCk+6H+9Tjenh0MMzGwIg
        et4glMAn8Iy5N096QoJPj40Mnhzk+YbTVvPWTaod4iU=
        -----END CERTIFICATE-----
        """
    static let ca = """
        -----BEGIN CERTIFICATE-----
        MIIBSzCB86ADAgECAhR0f1RccbGsSyClFUXf2AQyXtDAHTAKBggqhkjOPQQDAjAc
        MRowGAYDVQQDDBFTYWxseXBvcnQgVGVzdCBDQTAeFw0yNjEyMDIxOTA0MjVaFw0y
        NzEyMDMxOTA0MjVaMBwxGjAYBgNVBAMMEVNhbGx5cG9ydCBUZXN0IENBMFkwEwYH
        KoZIzj0CAQYIKoZIzj0DAQcDQgAEyGaHmCHKHOywybpoCa6DvqimvRSAhPCLjTFu
        OI3di0uvoFxdvB6Jg0P8/JsuEWaZZJLUl4HCtRGyGml0SZbKcaMTMBEwDwYDVR0T
        AQH/BAUwAwEB/zAKBggqhkjOPQQDAgNHADBEAiAqgtMPnLpA9XeJtVIzCothkNnG
        0CFZBtug8d/2Vn1I6gIgSWzGUqt5HpVbZ9rFS9FyW6Ix4qyNV0kJTiLQqhKM6WQ=
        -----END CERTIFICATE-----
        """
    static let crl = """
        -----BEGIN X509 CRL-----
        MIHMMHQCAQEwCgYIKoZIzj0EAwIwHDEaMBgGA1UEAwwRU2FsbHlwb3J0IFRlc3Qg
        Q0EXDTI2MTIwMjE5MDQyNVoXDTI3MDEwMjE5MDQyNVowJzAlAhQdOgsky9DGwDgH
        S/WGcGKrH4388hcNMjYxMjAyMTkwNDI1WjAKBggqhkjOPQQDAgNIADBFAiEAthsk
        OI9E/84PADRcsQ+h7MjQbTVbgqPcilHwj0Ws38sCIDEbF1k5e5+Zlc7a7pbRs49J
        Hxgo1tqxwglLyM6pptr4
        -----END X509 CRL-----
        """
    static let aliceSerial = "06AA23ACC89CEB5C8C2FE9CAB53023DF5D842893"
    static let bobSerial = "1D3A0B24CBD0C6C038074BF5867062AB1F8DFCF2"
}
