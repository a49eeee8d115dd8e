import NIOCore
import SallyportAuth

/// How username/password logins are checked.
public struct AuthenticationSettings: Sendable, Hashable {
    public var pam = PAMAuthenticator.Configuration()
    public var throttle = LoginThrottle.Configuration()
    /// How long a successful login is remembered (user + keyed hash of the password); 0 turns the
    /// cache off. Cleared on reload.
    public var cacheTTL: TimeAmount = .seconds(30)

    public init() {}
}

extension AuthenticationSettings {
    mutating func read(_ section: inout ConfigSection) {
        section.durationOrZero("cache_ttl", into: &cacheTTL)
        section.section("pam") { pam in
            if let service = pam.value("service", { service in
                service.isEmpty || service.contains("/")
                    ? .failure(ConfigValues.Message("'\(service)' is not a PAM service name (a file name in /etc/pam.d)")) : .success(service)
            }) {
                self.pam.service = service
            }
            pam.integer("threads", range: 1...256, into: &self.pam.threads)
            pam.integer("max_pending", range: 1...100_000, into: &self.pam.maxPending)
            pam.integer("max_pending_per_client", range: 1...100_000, into: &self.pam.maxPendingPerClient)
        }
        section.section("throttle") { throttle in
            throttle.integer("max_failures", range: 0...1_000_000, into: &self.throttle.maxFailures)
            throttle.duration("window", into: &self.throttle.window)
            throttle.duration("backoff", into: &self.throttle.backoff)
            throttle.duration("max_backoff", into: &self.throttle.maxBackoff)
        }
    }
}
