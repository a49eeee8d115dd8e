// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "sallyport",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "sallyport", targets: ["sallyport"])
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.3"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
    ],
    targets: [
        // Pure SOCKS5 wire types, incremental parser, serializers and the negotiation state machine.
        .target(
            name: "SOCKSProtocol",
            dependencies: [.product(name: "NIOCore", package: "swift-nio")]
        ),
        // The few C calls Swift cannot make itself (variadic ones: prctl).
        .target(name: "CSystemShims"),
        // Linux-PAM, from Debian's libpam0g-dev.
        .systemLibrary(
            name: "CPAM",
            path: "Sources/CPAM",
            providers: [.apt(["libpam0g-dev"])]
        ),
        // libyaml, from Debian's libyaml-dev: the configuration file's parser.
        .systemLibrary(
            name: "CYAML",
            path: "Sources/CYAML",
            pkgConfig: "yaml-0.1",
            providers: [.apt(["libyaml-dev"])]
        ),
        // libxcrypt's crypt_r, from Debian's libcrypt-dev: the user file's password hashes.
        .systemLibrary(
            name: "CCrypt",
            path: "Sources/CCrypt",
            providers: [.apt(["libcrypt-dev"])]
        ),
        // Authentication: the Authenticator protocol, PAM and the user file on a bounded thread
        // pool, login throttling.
        .target(
            name: "SallyportAuth",
            dependencies: [
                "CPAM", "CCrypt", "CYAML", "SOCKSProtocol",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The egress policy: pure rules, table-tested without sockets.
        .target(
            name: "SallyportPolicy",
            dependencies: ["SOCKSProtocol"]
        ),
        // The one bidirectional relay every session goes through.
        .target(
            name: "SallyportRelay",
            dependencies: [
                "SOCKSProtocol",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        // Server wiring: configuration, listeners, negotiation handler, outbound connect, logging, lifecycle.
        .target(
            name: "Sallyport",
            dependencies: [
                "SOCKSProtocol", "SallyportAuth", "SallyportRelay", "SallyportPolicy",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
            ]
        ),
        .executableTarget(
            name: "sallyport",
            dependencies: [
                "Sallyport", "SallyportAuth", "SallyportPolicy", "CSystemShims",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ]
        ),
        // What the fuzzer drives (`make fuzz`), also replayed by the tests.
        .target(
            name: "SallyportFuzz",
            dependencies: [
                "SOCKSProtocol", "SallyportPolicy", "SallyportAuth", "Sallyport", .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"), .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
            ]
        ),
        // libFuzzer's entry with -D FUZZING (`make fuzz`); else replays files through a target.
        .executableTarget(name: "sallyport-fuzz", dependencies: ["SallyportFuzz", "CSystemShims"]),
        // The load generator behind `make bench`.
        .executableTarget(
            name: "sallyport-bench",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(
            name: "SallyportPolicyTests",
            dependencies: ["SallyportPolicy", "SOCKSProtocol"]
        ),
        .testTarget(
            name: "SallyportAuthTests",
            dependencies: [
                "SallyportAuth", "SOCKSProtocol",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "SOCKSProtocolTests",
            dependencies: ["SOCKSProtocol", .product(name: "NIOCore", package: "swift-nio")]
        ),
        .testTarget(
            name: "SallyportRelayTests",
            dependencies: [
                "SallyportRelay", "SOCKSProtocol",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ]
        ),
        // In-process unit tests of the server layer: session over EmbeddedChannel, configuration,
        // resolver, usage book.
        .testTarget(
            name: "SallyportTests",
            dependencies: [
                "Sallyport", "SOCKSProtocol", "SallyportAuth", "SallyportRelay", "SallyportPolicy", "SallyportFuzz", "SallyportTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                // Only to check the configuration reader against a full YAML implementation.
            ]
        ),
        // What the unit and system tests share: log capture, waiting for a change, the package root.
        .target(
            name: "SallyportTestSupport",
            dependencies: [
                "Sallyport",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            path: "Tests/SallyportTestSupport"
        ),
        // What system tests need that Swift cannot call: fork and exec with a parent-death signal.
        .target(name: "CTestSupport", path: "Tests/CTestSupport"),
        // System tests: the real binary over real sockets, PAM under pam_wrapper, real clients,
        // network namespaces, the Debian package. Run apart from the unit tests (`make test`).
        .testTarget(
            name: "SallyportSystemTests",
            dependencies: [
                "Sallyport", "SOCKSProtocol", "SallyportAuth", "SallyportRelay", "SallyportPolicy", "CTestSupport", "SallyportTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
