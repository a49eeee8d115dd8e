import Logging
import NIOCore
import SallyportAuth

/// What a login came to, for the session, and the one place its log line and metric are made.
enum LoginOutcome {
    case succeeded(Identity)
    /// Wrong credentials, or the checker failed: the RFC 1929 failure reply.
    case failed
    /// Not checked at all (throttled, overloaded): the failure reply too, and `end=auth_refused`.
    case refused

    init(_ result: Result<AuthenticationResult, any Error>) {
        switch result {
        case .success(.success(let identity)): self = .succeeded(identity)
        case .success(.refused): self = .refused
        case .success(.failure), .failure: self = .failed
        }
    }

    /// Logs the login (never the password) and counts it.
    static func report(
        _ result: Result<AuthenticationResult, any Error>, user: String, session: SessionRecord, logger: Logger, metrics: ServerMetrics?
    ) {
        var metadata: Logger.Metadata = ["session": "\(session.idText)", "user": "\(user)", "client": "\(session.clientText)"]
        switch result {
        case .success(.success):
            metrics?.authAttempt(.success)
            logger.info("authentication succeeded", metadata: metadata)
        case .success(.failure(let reason)):
            metadata["reason"] = "\(reason)"
            metrics?.authAttempt(.failure)
            logger.notice("authentication failed", metadata: metadata)
        case .success(.refused(let reason, let why)):
            metrics?.authAttempt(why == .throttled ? .throttled : .overloaded)
            metadata["reason"] = "\(reason)"
            logger.notice("authentication refused", metadata: metadata)
        case .failure(let error):
            metadata["error"] = "\(error)"
            logger.error("authenticator error", metadata: metadata)
        }
    }
}
