import java.io.IOException;
import java.net.URI;
import java.net.URLEncoder;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.resource.ResourceType;
import org.apache.kafka.metadata.authorizer.StandardAuthorizer;
import org.apache.kafka.server.authorizer.Action;
import org.apache.kafka.server.authorizer.AuthorizableRequestContext;
import org.apache.kafka.server.authorizer.AuthorizationResult;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * MSK's IAM access control, for the local target's IAM listeners: a request
 * by a principal registered in the decisions file (only the IAM listeners'
 * validator yields such principals) is authorized the way
 * MSK authorizes an IAM principal, by the kafka-cluster:* action and the
 * resource ARN MSK maps the Kafka operation to, decided by that principal's
 * IAM policy (asked of the URL the file gives: the deploy rehearsal, which
 * evaluates the role's statements from the template). Every other
 * principal is authorized by Kafka's own ACLs
 * (StandardAuthorizer), as before.
 *
 * The file (broker config ferry.msk.iam.authz.file), read again when it
 * changes, has one principal per line:
 *   <principal> <decision URL> <cluster ARN>
 * The decision URL is asked GET ?principal=&action=&resource=&probe=0|1
 * and answers ALLOWED or anything else (denied). `probe` is 1 for Kafka's
 * checks whose denial is not an error (logIfDenied false: e.g. a CREATE on
 * the cluster before the topic's own, topics a metadata request lists).
 *
 * Operation to action (MSK's mapping, in our words): topic READ ReadData,
 * WRITE WriteData, CREATE CreateTopic, DELETE DeleteTopic, ALTER AlterTopic,
 * DESCRIBE DescribeTopic, DESCRIBE_CONFIGS DescribeTopicDynamicConfiguration,
 * ALTER_CONFIGS AlterTopicDynamicConfiguration; group READ AlterGroup,
 * DESCRIBE DescribeGroup, DELETE DeleteGroup; transactional id WRITE
 * AlterTransactionalId, DESCRIBE DescribeTransactionalId; cluster DESCRIBE
 * DescribeCluster, ALTER AlterCluster, DESCRIBE_CONFIGS
 * DescribeClusterDynamicConfiguration, ALTER_CONFIGS
 * AlterClusterDynamicConfiguration, IDEMPOTENT_WRITE WriteDataIdempotently,
 * CREATE CreateTopic. Anything else is denied. Resources: the cluster's ARN,
 * and arn:aws:kafka:<region>:<account>:<topic|group|transactional-id>/<cluster
 * name>/<cluster uuid>/<name>.
 */
public class FerryMskIamAuthorizer extends StandardAuthorizer {
    private static final Logger LOG = LoggerFactory.getLogger(FerryMskIamAuthorizer.class);
    public static final String FILE_CONFIG = "ferry.msk.iam.authz.file";

    private record Registered(String url, String clusterArn) {
    }

    private Path file;
    private long modified = Long.MIN_VALUE;
    private long size = Long.MIN_VALUE;
    private Map<String, Registered> registered = new HashMap<>();
    private final HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build();

    @Override
    public void configure(Map<String, ?> configs) {
        super.configure(configs);
        Object f = configs.get(FILE_CONFIG);
        file = f == null ? null : Path.of(f.toString());
    }

    private synchronized Registered registered(String principal) {
        if (file == null) {
            return null;
        }
        try {
            long m = Files.exists(file) ? Files.getLastModifiedTime(file).toMillis() : -1;
            long s = m < 0 ? -1 : Files.size(file);
            if (m != modified || s != size) {
                Map<String, Registered> read = new HashMap<>();
                if (m >= 0) {
                    for (String line : Files.readAllLines(file, StandardCharsets.UTF_8)) {
                        String[] f = line.strip().split("\\s+");
                        if (f.length == 3 && !f[0].startsWith("#")) {
                            read.put(f[0], new Registered(f[1], f[2]));
                        }
                    }
                }
                registered = read;
                modified = m;
                size = s;
            }
        } catch (IOException e) {
            LOG.warn("MSK IAM authorizer: cannot read {}: {}", file, e.getMessage());
        }
        return registered.get(principal);
    }

    @Override
    public List<AuthorizationResult> authorize(AuthorizableRequestContext context, List<Action> actions) {
        // By principal, not listener: KRaft forwards CreateTopics and
        // DeleteTopics to the controller, which authorizes them with the
        // client's principal but its own listener's name. Only the IAM
        // listeners' validator yields these principals.
        Registered who = registered(context.principal().getName());
        if (who == null) {
            return super.authorize(context, actions);
        }
        List<AuthorizationResult> out = new ArrayList<>(actions.size());
        for (Action a : actions) {
            out.add(decide(context.principal().getName(), who, a));
        }
        return out;
    }

    private AuthorizationResult decide(String principal, Registered who, Action a) {
        String iamAction = iamAction(a.resourcePattern().resourceType(), a.operation());
        String resource = resourceArn(who.clusterArn(), a.resourcePattern().resourceType(), a.resourcePattern().name());
        if (iamAction == null || resource == null) {
            LOG.info("MSK IAM authorizer: {} {} on {} {} has no kafka-cluster action: denied", principal, a.operation(),
                    a.resourcePattern().resourceType(), a.resourcePattern().name());
            return AuthorizationResult.DENIED;
        }
        String query = "principal=" + enc(principal) + "&action=" + enc(iamAction) + "&resource=" + enc(resource)
                + "&probe=" + (a.logIfDenied() ? "0" : "1");
        try {
            HttpResponse<String> r = http.send(HttpRequest.newBuilder(URI.create(who.url() + "?" + query))
                    .timeout(Duration.ofSeconds(10)).GET().build(), HttpResponse.BodyHandlers.ofString());
            boolean allowed = r.statusCode() == 200 && "ALLOWED".equals(r.body().strip());
            if (!allowed && a.logIfDenied()) {
                LOG.info("MSK IAM authorizer: {} denied {} on {}", principal, iamAction, resource);
            }
            return allowed ? AuthorizationResult.ALLOWED : AuthorizationResult.DENIED;
        } catch (IOException | InterruptedException | IllegalArgumentException e) {
            LOG.warn("MSK IAM authorizer: cannot ask {} about {} on {}: {}; denied", who.url(), iamAction, resource,
                    e.getMessage());
            return AuthorizationResult.DENIED;
        }
    }

    private static String enc(String s) {
        return URLEncoder.encode(s, StandardCharsets.UTF_8);
    }

    static String iamAction(ResourceType type, AclOperation op) {
        String action = switch (type) {
            case TOPIC -> switch (op) {
                case READ -> "ReadData";
                case WRITE -> "WriteData";
                case CREATE -> "CreateTopic";
                case DELETE -> "DeleteTopic";
                case ALTER -> "AlterTopic";
                case DESCRIBE -> "DescribeTopic";
                case DESCRIBE_CONFIGS -> "DescribeTopicDynamicConfiguration";
                case ALTER_CONFIGS -> "AlterTopicDynamicConfiguration";
                default -> null;
            };
            case GROUP -> switch (op) {
                case READ -> "AlterGroup";
                case DESCRIBE -> "DescribeGroup";
                case DELETE -> "DeleteGroup";
                default -> null;
            };
            case TRANSACTIONAL_ID -> switch (op) {
                case WRITE -> "AlterTransactionalId";
                case DESCRIBE -> "DescribeTransactionalId";
                default -> null;
            };
            case CLUSTER -> switch (op) {
                case DESCRIBE -> "DescribeCluster";
                case ALTER -> "AlterCluster";
                case DESCRIBE_CONFIGS -> "DescribeClusterDynamicConfiguration";
                case ALTER_CONFIGS -> "AlterClusterDynamicConfiguration";
                case IDEMPOTENT_WRITE -> "WriteDataIdempotently";
                case CREATE -> "CreateTopic";
                default -> null;
            };
            default -> null;
        };
        return action == null ? null : "kafka-cluster:" + action;
    }

    /** The ARN MSK checks for a resource of the cluster `clusterArn`. */
    static String resourceArn(String clusterArn, ResourceType type, String name) {
        int at = clusterArn.indexOf(":cluster/");
        if (at < 0) {
            return null;
        }
        String prefix = clusterArn.substring(0, at);
        String cluster = clusterArn.substring(at + ":cluster/".length());
        return switch (type) {
            case CLUSTER -> clusterArn;
            case TOPIC -> prefix + ":topic/" + cluster + "/" + name;
            case GROUP -> prefix + ":group/" + cluster + "/" + name;
            case TRANSACTIONAL_ID -> prefix + ":transactional-id/" + cluster + "/" + name;
            default -> null;
        };
    }
}
