import CPAM
import NIOConcurrencyHelpers
import SOCKSProtocol

#if canImport(Glibc)
import Glibc
#endif

/// The outcome of one PAM transaction.
public struct PAMOutcome: Sendable, Equatable {
    /// `PAM_SUCCESS` from both `pam_authenticate` and `pam_acct_mgmt`.
    public var success: Bool
    /// The PAM step that decided: `authenticate`, `acct_mgmt` or `start`.
    public var step: String
    /// `pam_strerror` of the deciding return code.
    public var message: String
    /// What the modules said through the conversation (errors and notices), never a prompt answer.
    public var moduleMessages: [String]
    /// The delay after a failure that the modules asked for (pam_unix's ~2 s, pam_faildelay), in
    /// microseconds: not slept on the PAM thread, but left to the caller to apply before it answers.
    public var failDelayMicroseconds: UInt32 = 0
    /// After a success, `PAM_USER`: the account PAM authenticated.
    public var user: String?
}

/// One blocking PAM check, exactly as the server runs it: `pam_start` with the service,
/// `PAM_RHOST`, `pam_authenticate(PAM_DISALLOW_NULL_AUTHTOK)`, `pam_acct_mgmt`, `pam_end`.
///
/// It blocks while the modules work: call it on a thread pool, never on an event loop. It does not
/// sleep the delay modules ask for after a failure (`PAM_FAIL_DELAY` is set to a function that
/// records it): the outcome carries the delay, and the caller applies it as a timer, so a flood of
/// wrong passwords cannot hold the PAM threads asleep.
public func runPAMTransaction(service: String, username: String, password: Password, remoteHost: String?) -> PAMOutcome {
    let conversationData = PAMConversationData(password: password)
    defer { conversationData.wipe() }
    let appdata = Unmanaged.passRetained(conversationData)
    defer { appdata.release() }

    var conversation = pam_conv(conv: pamConversation, appdata_ptr: appdata.toOpaque())
    var handle: OpaquePointer?
    let started = pam_start(service, username, &conversation, &handle)
    guard started == PAM_SUCCESS, let handle else {
        return PAMOutcome(
            success: false, step: "start", message: String(cString: pam_strerror(handle, started)),
            moduleMessages: conversationData.messages)
    }
    if let remoteHost { pam_set_item(handle, PAM_RHOST, remoteHost) }
    pam_set_item(handle, PAM_FAIL_DELAY, unsafeBitCast(pamFailDelay, to: UnsafeRawPointer.self))
    let flags = Int32(bitPattern: PAM_DISALLOW_NULL_AUTHTOK)
    var status = pam_authenticate(handle, flags)
    var step = "authenticate"
    if status == PAM_SUCCESS {
        step = "acct_mgmt"
        status = pam_acct_mgmt(handle, flags)
    }
    let message = String(cString: pam_strerror(handle, status))
    // The account PAM settled on, which a module may have changed from what the client typed.
    var authenticatedUser: String?
    if status == PAM_SUCCESS {
        var item: UnsafeRawPointer?
        if pam_get_item(handle, PAM_USER, &item) == PAM_SUCCESS, let item {
            authenticatedUser = String(cString: item.assumingMemoryBound(to: CChar.self))
        }
    }
    pam_end(handle, status)
    return PAMOutcome(
        success: status == PAM_SUCCESS, step: step, message: message, moduleMessages: conversationData.messages,
        failDelayMicroseconds: status == PAM_SUCCESS ? 0 : conversationData.failDelay, user: authenticatedUser)
}

/// Called by Linux-PAM instead of sleeping after a failure (`PAM_FAIL_DELAY`), with the
/// conversation's `appdata_ptr`: records the delay.
private let pamFailDelay: @convention(c) (Int32, UInt32, UnsafeMutableRawPointer?) -> Void = { _, microseconds, appdata in
    guard let appdata else { return }
    let data = Unmanaged<PAMConversationData>.fromOpaque(appdata).takeUnretainedValue()
    data.failDelay = max(data.failDelay, microseconds)
}

/// What the conversation function needs: the password (as a C string it can copy), and a place for
/// the modules' messages. Touched only by the thread running the transaction.
final class PAMConversationData {
    private var password: UnsafeMutablePointer<CChar>
    private let passwordLength: Int
    var messages: [String] = []
    /// The delay the modules asked for after a failure, in microseconds.
    var failDelay: UInt32 = 0

    init(password: Password) {
        passwordLength = password.count
        self.password = UnsafeMutablePointer<CChar>.allocate(capacity: password.count + 1)
        password.withUnsafeBytes { bytes in
            for (index, byte) in bytes.enumerated() { self.password[index] = CChar(bitPattern: byte) }
        }
        self.password[password.count] = 0
    }

    /// A fresh `strdup` of the password, for PAM to free.
    func passwordCopy() -> UnsafeMutablePointer<CChar>? { strdup(password) }

    /// Overwrites the password in memory.
    func wipe() {
        explicit_bzero(password, passwordLength + 1)
    }

    deinit {
        wipe()
        password.deallocate()
    }
}

/// The PAM conversation: answers password prompts (echo off) with the client's password, keeps
/// error and info messages, and refuses anything else. Responses are `calloc`/`strdup` memory,
/// which PAM frees.
private let pamConversation: @convention(c) (
    Int32, UnsafeMutablePointer<UnsafePointer<pam_message>?>?, UnsafeMutablePointer<UnsafeMutablePointer<pam_response>?>?,
    UnsafeMutableRawPointer?
) -> Int32 = { count, messages, responses, appdata in
    guard count > 0, count <= PAM_MAX_NUM_MSG, let messages, let responses, let appdata else { return PAM_CONV_ERR }
    let data = Unmanaged<PAMConversationData>.fromOpaque(appdata).takeUnretainedValue()
    guard let replies = calloc(Int(count), MemoryLayout<pam_response>.size)?.assumingMemoryBound(to: pam_response.self)
    else { return PAM_BUF_ERR }

    func fail(_ code: Int32) -> Int32 {
        for index in 0..<Int(count) {
            if let text = replies[index].resp {
                memset(text, 0, strlen(text))
                free(text)
            }
        }
        free(replies)
        return code
    }

    for index in 0..<Int(count) {
        // Linux-PAM passes an array of pointers to messages.
        guard let message = messages[index]?.pointee else { return fail(PAM_CONV_ERR) }
        switch message.msg_style {
        case PAM_PROMPT_ECHO_OFF:
            guard let copy = data.passwordCopy() else { return fail(PAM_BUF_ERR) }
            replies[index].resp = copy
        case PAM_ERROR_MSG, PAM_TEXT_INFO:
            if let text = message.msg { data.messages.append(String(cString: text)) }
        default:
            // A prompt with echo (a user name, a one-time code) cannot be answered over SOCKS.
            return fail(PAM_CONV_ERR)
        }
    }
    responses.pointee = replies
    return PAM_SUCCESS
}

/// Runs a `get*_r` call with a buffer that grows while the call answers ERANGE (large groups
/// need more than any fixed size), up to 16 MiB. Returns the call's result and whether it found
/// an entry.
func withGrowingBuffer(_ call: (UnsafeMutablePointer<CChar>, Int) -> (status: Int32, found: Bool)) -> Bool {
    var size = 16 * 1024
    while size <= 16 << 20 {
        let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: size)
        defer { buffer.deallocate() }
        let (status, found) = call(buffer, size)
        // POSIX returns the error; some NSS layers (nss_wrapper) return -1 and set errno.
        if status == ERANGE || (status == -1 && errno == ERANGE) {
            size *= 4
            continue
        }
        return status == 0 && found
    }
    return false
}

/// The name NSS knows `user` by (`getpwnam_r`'s `pw_name`): with a case-insensitive backend (sssd,
/// LDAP), `ALICE` logs in as `alice`, and rules, limits and logs must see `alice`. The name as given
/// when NSS does not know it.
public func canonicalUserName(_ user: String) -> String {
    var passwd = Glibc.passwd()
    var result: UnsafeMutablePointer<Glibc.passwd>?
    var name = user
    _ = withGrowingBuffer { buffer, size in
        let status = getpwnam_r(user, &passwd, buffer, size, &result)
        if status == 0, result != nil, let pwName = passwd.pw_name { name = String(cString: pwName) }
        return (status, result != nil)
    }
    return name
}

/// Group lookups one at a time: `getgrouplist` walks the group database, and not every NSS module
/// keeps that walk per thread (nss_wrapper does not; two walks at once miss groups).
private let groupLookups = NIOLock()

/// The names of the groups `user` belongs to, from NSS (`getpwnam_r` + `getgrouplist`); empty when
/// the user is not known to NSS.
public func groupNames(ofUser user: String) -> [String] {
    groupLookups.withLock { lookUpGroupNames(ofUser: user) }
}

private func lookUpGroupNames(ofUser user: String) -> [String] {
    var passwd = Glibc.passwd()
    var result: UnsafeMutablePointer<Glibc.passwd>?
    var primary: gid_t = 0
    let known = withGrowingBuffer { buffer, size in
        let status = getpwnam_r(user, &passwd, buffer, size, &result)
        if status == 0, result != nil { primary = passwd.pw_gid }
        return (status, result != nil)
    }
    guard known else { return [] }
    var count: Int32 = 64
    var gids = [gid_t](repeating: 0, count: Int(count))
    if getgrouplist(user, primary, &gids, &count) < 0 {
        gids = [gid_t](repeating: 0, count: Int(count))
        guard getgrouplist(user, primary, &gids, &count) >= 0 else { return [] }
    }
    var names: [String] = []
    for gid in gids.prefix(Int(count)) {
        var group = Glibc.group()
        var found: UnsafeMutablePointer<Glibc.group>?
        var name: String?
        _ = withGrowingBuffer { buffer, size in
            let status = getgrgid_r(gid, &group, buffer, size, &found)
            if status == 0, found != nil, let groupName = group.gr_name { name = String(cString: groupName) }
            return (status, found != nil)
        }
        if let name, !names.contains(name) { names.append(name) }
    }
    return names
}
