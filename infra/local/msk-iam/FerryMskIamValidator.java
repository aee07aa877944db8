/*
 * The server side of MSK IAM authentication for the local Kafka target
 * (infra/local/up compiles this against the Kafka jars and puts it on the
 * target broker's classpath). Written for Ferry from the SigV4 query-string
 * signing specification; it does what an Amazon MSK broker's IAM listener
 * does with a SASL/OAUTHBEARER token, as far as a local broker can know it.
 *
 * The token is the base64url (unpadded) text of a presigned URL:
 *
 *   https://kafka.<region>.amazonaws.com/?Action=kafka-cluster%3AConnect
 *     &X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=<key id>/<yyyymmdd>/<region>/kafka-cluster/aws4_request
 *     &X-Amz-Date=<yyyymmddThhmmssZ>&X-Amz-Expires=<seconds>&X-Amz-SignedHeaders=host
 *     [&X-Amz-Security-Token=...]&X-Amz-Signature=<hex>[&User-Agent=...]
 *
 * User-Agent is appended by the signer after signing, and the signature
 * cannot sign itself: every other parameter is part of the signed request.
 *
 * A token is accepted only when: it decodes to such a URL; the action is
 * kafka-cluster:Connect; the host and the credential scope name this
 * listener's region and the kafka-cluster service; the access key id is one
 * this listener knows; the signature, recomputed from the query with that
 * key's secret, matches; a session token, if sent, is the one that key
 * was issued with; the signing time is not in the future (beyond a clock
 * skew) and signing time + X-Amz-Expires has not passed. The principal is
 * the IAM identity configured for the key, so ACLs can name it.
 *
 * JAAS options (listener.name.<l>.oauthbearer.sasl.jaas.config):
 *   region              the listener's AWS region (required)
 *   identities          whitespace-separated "<key id>|<secret key>|<principal>[|<session token>]"
 *                       ('|' is in none of them: not in IAM names, ARNs, keys or base64)
 *   identitiesFile      optional: a file of more identities, one per line in
 *                       the same form (blank lines and '#' comments skipped),
 *                       read again whenever it changes, so a test can register
 *                       credentials (the rehearsal's roles) without a restart
 *   maxTokenAgeSeconds  optional: honour a token for at most this long after
 *                       it was signed (a test device: MSK honours X-Amz-Expires)
 *   maxClockSkewSeconds optional, default 300: how far in the future a
 *                       signing time may be
 *
 * A refusal gives the client the reason (the OAUTHBEARER error status,
 * which the broker sends back as the SaslAuthenticate error message) and is
 * logged. Secret keys and signatures are never logged.
 */

import java.io.IOException;
import java.net.URI;
import java.net.URISyntaxException;
import java.net.URLDecoder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.GeneralSecurityException;
import java.security.MessageDigest;
import java.time.Instant;
import java.time.LocalDateTime;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;
import java.time.format.DateTimeParseException;
import java.util.ArrayList;
import java.util.Base64;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;

import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;
import javax.security.auth.callback.Callback;
import javax.security.auth.callback.UnsupportedCallbackException;
import javax.security.auth.login.AppConfigurationEntry;

import org.apache.kafka.common.security.auth.AuthenticateCallbackHandler;
import org.apache.kafka.common.security.oauthbearer.OAuthBearerExtensionsValidatorCallback;
import org.apache.kafka.common.security.oauthbearer.OAuthBearerToken;
import org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallback;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

public final class FerryMskIamValidator implements AuthenticateCallbackHandler {
    private static final Logger LOG = LoggerFactory.getLogger(FerryMskIamValidator.class);

    static final String SERVICE = "kafka-cluster";
    static final String ACTION = "kafka-cluster:Connect";
    static final String ALGORITHM = "AWS4-HMAC-SHA256";
    static final String SIGNATURE = "X-Amz-Signature";
    /** Added by the signer after signing: not part of the signed request. */
    static final String USER_AGENT = "User-Agent";
    /** The longest a presigned URL may be valid, by the SigV4 rules (7 days). */
    static final long MAX_EXPIRES_SECONDS = 604_800;
    static final DateTimeFormatter AMZ_DATE = DateTimeFormatter.ofPattern("yyyyMMdd'T'HHmmss'Z'");
    /** SHA-256 of the empty body: what a presigned GET signs as its payload. */
    static final String EMPTY_PAYLOAD_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    /** What the listener knows about one access key. */
    record Identity(String secretKey, String sessionToken, String principal) {}

    /** A token that passed: who, and until when it is honoured. */
    record Accepted(String principal, String accessKeyId, long signedAtMs, long honouredUntilMs) {}

    /** A refusal: the reason the client is told. */
    static final class Refused extends Exception {
        private static final long serialVersionUID = 1L;

        Refused(String reason) {
            super(reason);
        }
    }

    private String region;
    private final Map<String, Identity> identities = new HashMap<>();
    private Path identitiesFile;
    private Map<String, Identity> fromFile = new HashMap<>();
    private long fileModified = Long.MIN_VALUE;
    private long fileSize = Long.MIN_VALUE;
    private Long maxTokenAgeSeconds;
    private long maxClockSkewSeconds = 300;
    private boolean configured;

    @Override
    public void configure(Map<String, ?> configs, String saslMechanism, List<AppConfigurationEntry> jaasConfigEntries) {
        if (!"OAUTHBEARER".equals(saslMechanism)) {
            throw new IllegalArgumentException("FerryMskIamValidator serves OAUTHBEARER only, not " + saslMechanism);
        }
        if (jaasConfigEntries == null || jaasConfigEntries.size() != 1) {
            throw new IllegalArgumentException("FerryMskIamValidator needs exactly one JAAS login module entry");
        }
        Map<String, ?> options = jaasConfigEntries.get(0).getOptions();
        configure(options);
    }

    /** Reads the JAAS options; also what the self-test uses. */
    void configure(Map<String, ?> options) {
        region = option(options, "region");
        if (region == null || !region.matches("[a-z0-9-]+")) {
            throw new IllegalArgumentException("FerryMskIamValidator: option region is missing or not a region name");
        }
        String list = option(options, "identities");
        if (list == null || list.isBlank()) {
            throw new IllegalArgumentException("FerryMskIamValidator: option identities is missing");
        }
        for (String entry : list.trim().split("\\s+")) {
            parseIdentity(entry, identities);
        }
        String file = option(options, "identitiesFile");
        identitiesFile = file == null ? null : Path.of(file);
        String age = option(options, "maxTokenAgeSeconds");
        if (age != null) {
            maxTokenAgeSeconds = Long.parseLong(age);
        }
        String skew = option(options, "maxClockSkewSeconds");
        if (skew != null) {
            maxClockSkewSeconds = Long.parseLong(skew);
        }
        configured = true;
        LOG.info("MSK IAM validator: region {}, access keys {}, tokens honoured {}", region, identities.keySet(),
                maxTokenAgeSeconds == null ? "until they expire" : "for at most " + maxTokenAgeSeconds + " s after signing");
    }

    private static void parseIdentity(String entry, Map<String, Identity> into) {
        String[] f = entry.split("\\|", -1);
        if (f.length < 3 || f.length > 4 || f[0].isEmpty() || f[1].isEmpty() || f[2].isEmpty()
                || (f.length == 4 && f[3].isEmpty())) {
            throw new IllegalArgumentException(
                    "FerryMskIamValidator: an identity is not <key id>|<secret key>|<principal>[|<session token>]");
        }
        into.put(f[0], new Identity(f[1], f.length == 4 ? f[3] : null, f[2]));
    }

    /** The identity of a key: the options' first, then the file's as it is now. */
    private synchronized Identity identity(String accessKeyId) {
        Identity fixed = identities.get(accessKeyId);
        if (fixed != null || identitiesFile == null) {
            return fixed;
        }
        try {
            long modified = Files.exists(identitiesFile) ? Files.getLastModifiedTime(identitiesFile).toMillis() : -1;
            long size = modified < 0 ? -1 : Files.size(identitiesFile);
            if (modified != fileModified || size != fileSize) {
                Map<String, Identity> read = new HashMap<>();
                if (modified >= 0) {
                    for (String line : Files.readAllLines(identitiesFile, StandardCharsets.UTF_8)) {
                        String entry = line.strip();
                        if (!entry.isEmpty() && !entry.startsWith("#")) {
                            parseIdentity(entry, read);
                        }
                    }
                }
                fromFile = read;
                fileModified = modified;
                fileSize = size;
                LOG.info("MSK IAM validator: {} identities from {}", read.size(), identitiesFile);
            }
        } catch (IOException | IllegalArgumentException e) {
            LOG.warn("MSK IAM validator: cannot read {}: {}", identitiesFile, e.getMessage());
        }
        return fromFile.get(accessKeyId);
    }

    private static String option(Map<String, ?> options, String name) {
        Object v = options.get(name);
        return v == null ? null : v.toString();
    }

    @Override
    public void handle(Callback[] callbacks) throws UnsupportedCallbackException {
        if (!configured) {
            throw new IllegalStateException("FerryMskIamValidator used before configure()");
        }
        for (Callback callback : callbacks) {
            if (callback instanceof OAuthBearerValidatorCallback validation) {
                validate(validation);
            } else if (callback instanceof OAuthBearerExtensionsValidatorCallback) {
                // MSK IAM clients send no SASL extensions; any sent are left
                // unvalidated, which the broker ignores.
            } else {
                throw new UnsupportedCallbackException(callback);
            }
        }
    }

    private void validate(OAuthBearerValidatorCallback callback) {
        String value = callback.tokenValue();
        try {
            Accepted ok = check(value, System.currentTimeMillis());
            callback.token(new Token(value, ok));
            LOG.info("MSK IAM token accepted: principal {} (access key {}), signed at {}, honoured until {}", ok.principal(),
                    ok.accessKeyId(), Instant.ofEpochMilli(ok.signedAtMs()), Instant.ofEpochMilli(ok.honouredUntilMs()));
        } catch (Refused e) {
            LOG.warn("MSK IAM token refused: {}", e.getMessage());
            // The status reaches the client inside a JSON string the broker
            // builds without escaping: keep it free of quotes and backslashes.
            callback.error("invalid_token: " + e.getMessage().replace('"', '\'').replace('\\', '/'), ACTION, null);
        }
    }

    /** Checks a token at time nowMs; the principal and lifetime, or why not. */
    Accepted check(String token, long nowMs) throws Refused {
        String url;
        try {
            url = new String(Base64.getUrlDecoder().decode(token), StandardCharsets.UTF_8);
        } catch (IllegalArgumentException e) {
            throw new Refused("the token is not base64url text (an MSK IAM token is a base64url-encoded presigned URL)");
        }
        URI uri;
        try {
            uri = new URI(url);
        } catch (URISyntaxException e) {
            throw new Refused("the token is not a presigned URL");
        }
        if (!"https".equals(uri.getScheme()) || uri.getRawQuery() == null || uri.getHost() == null) {
            throw new Refused("the token is not a presigned https URL with a query");
        }
        String path = uri.getRawPath() == null || uri.getRawPath().isEmpty() ? "/" : uri.getRawPath();
        if (!"/".equals(path) || uri.getPort() != -1 || uri.getRawUserInfo() != null || uri.getRawFragment() != null) {
            throw new Refused("the presigned URL must be https://kafka.<region>.amazonaws.com/?...");
        }
        String host = uri.getHost();
        Map<String, String> query = parseQuery(uri.getRawQuery());

        if (!ACTION.equals(query.get("Action"))) {
            throw new Refused("the signed action is " + describe(query.get("Action")) + ", not " + ACTION);
        }
        if (!ALGORITHM.equals(query.get("X-Amz-Algorithm"))) {
            throw new Refused("X-Amz-Algorithm is " + describe(query.get("X-Amz-Algorithm")) + ", not " + ALGORITHM);
        }
        if (!"host".equals(query.get("X-Amz-SignedHeaders"))) {
            throw new Refused("X-Amz-SignedHeaders is " + describe(query.get("X-Amz-SignedHeaders"))
                    + "; a token can carry no header but host");
        }
        String credential = required(query, "X-Amz-Credential");
        String[] scope = credential.split("/", -1);
        if (scope.length != 5 || !"aws4_request".equals(scope[4]) || scope[0].isEmpty()) {
            throw new Refused("X-Amz-Credential is not <key id>/<date>/<region>/<service>/aws4_request");
        }
        String accessKeyId = scope[0];
        String scopeDate = scope[1];
        String scopeRegion = scope[2];
        String scopeService = scope[3];
        if (!SERVICE.equals(scopeService)) {
            throw new Refused("the token is signed for service " + describe(scopeService) + ", not " + SERVICE);
        }
        if (!region.equals(scopeRegion)) {
            throw new Refused("the token is signed for region " + describe(scopeRegion) + ", but this cluster is in "
                    + region + " (the region comes from the cluster ARN)");
        }
        String expectedHost = "kafka." + region + ".amazonaws.com";
        if (!expectedHost.equals(host)) {
            throw new Refused("the token is signed for host " + describe(host) + ", not " + expectedHost);
        }
        String amzDate = required(query, "X-Amz-Date");
        long signedAtMs;
        try {
            signedAtMs = LocalDateTime.parse(amzDate, AMZ_DATE).toInstant(ZoneOffset.UTC).toEpochMilli();
        } catch (DateTimeParseException e) {
            throw new Refused("X-Amz-Date " + describe(amzDate) + " is not yyyyMMddTHHmmssZ");
        }
        if (!amzDate.startsWith(scopeDate) || scopeDate.length() != 8) {
            throw new Refused("the credential scope's date " + describe(scopeDate) + " is not X-Amz-Date's day");
        }
        long expiresSeconds;
        try {
            expiresSeconds = Long.parseLong(required(query, "X-Amz-Expires"));
        } catch (NumberFormatException e) {
            throw new Refused("X-Amz-Expires is not a number of seconds");
        }
        if (expiresSeconds < 1 || expiresSeconds > MAX_EXPIRES_SECONDS) {
            throw new Refused("X-Amz-Expires " + expiresSeconds + " is outside 1.." + MAX_EXPIRES_SECONDS);
        }
        String signature = required(query, SIGNATURE);
        if (!signature.matches("[0-9a-f]{64}")) {
            throw new Refused("X-Amz-Signature is not 64 lowercase hex digits");
        }

        Identity identity = identity(accessKeyId);
        if (identity == null) {
            throw new Refused("access key id " + describe(accessKeyId) + " is not known to this cluster (InvalidClientTokenId)");
        }
        String expected = sign(canonicalRequest(host, query), amzDate, scopeDate, identity.secretKey());
        if (!MessageDigest.isEqual(expected.getBytes(StandardCharsets.US_ASCII), signature.getBytes(StandardCharsets.US_ASCII))) {
            throw new Refused("the signature does not match for access key id " + accessKeyId
                    + ": the token was signed with another secret key, or altered (SignatureDoesNotMatch)");
        }
        String sessionToken = query.get("X-Amz-Security-Token");
        if (identity.sessionToken() != null && !identity.sessionToken().equals(sessionToken)) {
            throw new Refused("access key id " + accessKeyId + " is temporary: its session token is missing or not its own");
        }
        if (identity.sessionToken() == null && sessionToken != null) {
            throw new Refused("access key id " + accessKeyId + " is a long-term key: it comes with no session token");
        }

        // Time, checked last: a forged token learns nothing from it.
        if (signedAtMs > nowMs + maxClockSkewSeconds * 1000) {
            throw new Refused("the token was signed at " + amzDate + ", more than " + maxClockSkewSeconds
                    + " s after the broker's clock (" + AMZ_DATE.format(LocalDateTime.ofInstant(Instant.ofEpochMilli(nowMs), ZoneOffset.UTC))
                    + "): check the client's clock");
        }
        long expiresAtMs = signedAtMs + expiresSeconds * 1000;
        long honouredUntilMs = expiresAtMs;
        String limit = "X-Amz-Expires=" + expiresSeconds + " s";
        if (maxTokenAgeSeconds != null && signedAtMs + maxTokenAgeSeconds * 1000 < honouredUntilMs) {
            honouredUntilMs = signedAtMs + maxTokenAgeSeconds * 1000;
            limit = "this listener honours tokens for " + maxTokenAgeSeconds + " s";
        }
        if (nowMs >= honouredUntilMs) {
            throw new Refused("the token has expired: signed at " + amzDate + ", " + limit + ", now "
                    + AMZ_DATE.format(LocalDateTime.ofInstant(Instant.ofEpochMilli(nowMs), ZoneOffset.UTC))
                    + " (sign a fresh token for every authentication)");
        }
        return new Accepted(identity.principal(), accessKeyId, signedAtMs, honouredUntilMs);
    }

    /** Query parameters, decoded; a repeated name is refused (it would be ambiguous). */
    static Map<String, String> parseQuery(String rawQuery) throws Refused {
        Map<String, String> out = new HashMap<>();
        for (String pair : rawQuery.split("&")) {
            if (pair.isEmpty()) {
                continue;
            }
            int eq = pair.indexOf('=');
            String name = decode(eq < 0 ? pair : pair.substring(0, eq));
            String value = eq < 0 ? "" : decode(pair.substring(eq + 1));
            if (out.put(name, value) != null) {
                throw new Refused("query parameter " + describe(name) + " appears twice");
            }
        }
        return out;
    }

    private static String decode(String s) throws Refused {
        try {
            // application/x-www-form-urlencoded, as the signer writes it.
            return URLDecoder.decode(s, StandardCharsets.UTF_8);
        } catch (IllegalArgumentException e) {
            throw new Refused("the presigned URL's query is not well encoded");
        }
    }

    private static String required(Map<String, String> query, String name) throws Refused {
        String v = query.get(name);
        if (v == null || v.isEmpty()) {
            throw new Refused("the presigned URL has no " + name);
        }
        return v;
    }

    /** A client-supplied value, shortened and quoted for a message. */
    private static String describe(String v) {
        if (v == null) {
            return "missing";
        }
        String s = v.length() > 64 ? v.substring(0, 64) + "..." : v;
        return "'" + s.replaceAll("[^\\x20-\\x7e]", "?") + "'";
    }

    /**
     * The SigV4 canonical request of a presigned GET of "/" on host: every
     * query parameter but the signature and the User-Agent, names and values
     * percent-encoded (all but the unreserved characters), sorted by encoded
     * name then value; host the one signed header; the empty body's hash.
     */
    static String canonicalRequest(String host, Map<String, String> query) {
        TreeMap<String, String> sorted = new TreeMap<>();
        for (Map.Entry<String, String> e : query.entrySet()) {
            if (e.getKey().equals(SIGNATURE) || e.getKey().equals(USER_AGENT)) {
                continue;
            }
            sorted.put(uriEncode(e.getKey()), uriEncode(e.getValue()));
        }
        List<String> pairs = new ArrayList<>();
        sorted.forEach((k, v) -> pairs.add(k + "=" + v));
        return "GET\n/\n" + String.join("&", pairs) + "\nhost:" + host + "\n\nhost\n" + EMPTY_PAYLOAD_SHA256;
    }

    /** Percent-encoding as SigV4 wants it: everything but A-Z a-z 0-9 - _ . ~, in upper-case hex. */
    static String uriEncode(String s) {
        StringBuilder out = new StringBuilder();
        for (byte b : s.getBytes(StandardCharsets.UTF_8)) {
            char c = (char) (b & 0xff);
            if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.'
                    || c == '~') {
                out.append(c);
            } else {
                out.append('%').append(Character.toUpperCase(Character.forDigit((b >> 4) & 0xf, 16)))
                        .append(Character.toUpperCase(Character.forDigit(b & 0xf, 16)));
            }
        }
        return out.toString();
    }

    /** The hex signature of a canonical request, for this listener's region and the kafka-cluster service. */
    String sign(String canonicalRequest, String amzDate, String scopeDate, String secretKey) {
        String scope = scopeDate + "/" + region + "/" + SERVICE + "/aws4_request";
        String stringToSign = ALGORITHM + "\n" + amzDate + "\n" + scope + "\n" + hex(sha256(canonicalRequest));
        byte[] key = hmac(("AWS4" + secretKey).getBytes(StandardCharsets.UTF_8), scopeDate);
        key = hmac(key, region);
        key = hmac(key, SERVICE);
        key = hmac(key, "aws4_request");
        return hex(hmac(key, stringToSign));
    }

    private static byte[] sha256(String s) {
        try {
            return MessageDigest.getInstance("SHA-256").digest(s.getBytes(StandardCharsets.UTF_8));
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException(e);
        }
    }

    private static byte[] hmac(byte[] key, String data) {
        try {
            Mac mac = Mac.getInstance("HmacSHA256");
            mac.init(new SecretKeySpec(key, "HmacSHA256"));
            return mac.doFinal(data.getBytes(StandardCharsets.UTF_8));
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException(e);
        }
    }

    private static String hex(byte[] bytes) {
        StringBuilder out = new StringBuilder(bytes.length * 2);
        for (byte b : bytes) {
            out.append(Character.forDigit((b >> 4) & 0xf, 16)).append(Character.forDigit(b & 0xf, 16));
        }
        return out.toString();
    }

    @Override
    public void close() {}

    /** The accepted token as the broker sees it: the principal, and the lifetime the session may not outlive. */
    private record Token(String value, Accepted accepted) implements OAuthBearerToken {
        @Override
        public Set<String> scope() {
            return Set.of(ACTION);
        }

        @Override
        public long lifetimeMs() {
            return accepted.honouredUntilMs();
        }

        @Override
        public String principalName() {
            return accepted.principal();
        }

        @Override
        public Long startTimeMs() {
            return accepted.signedAtMs();
        }

        @Override
        public String toString() {
            // Never the token itself: while valid, it is a credential.
            return "MskIamToken[" + accepted.principal() + "]";
        }
    }

    /**
     * A self-check from the command line, for infra/local/up and tests:
     * java -cp <kafka libs>:<classes> FerryMskIamValidator <region> <identities> <token> [maxTokenAgeSeconds]
     * prints "accepted <principal> <honoured until ms>" or "refused <reason>" (exit 1).
     */
    public static void main(String[] args) {
        FerryMskIamValidator v = new FerryMskIamValidator();
        Map<String, String> options = new HashMap<>();
        options.put("region", args[0]);
        options.put("identities", args[1]);
        if (args.length > 3) {
            options.put("maxTokenAgeSeconds", args[3]);
        }
        v.configure(options);
        try {
            Accepted ok = v.check(args[2], System.currentTimeMillis());
            System.out.println("accepted " + ok.principal() + " " + ok.honouredUntilMs());
        } catch (Refused e) {
            System.out.println("refused " + e.getMessage());
            System.exit(1);
        }
    }
}
