import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * A small text file a test edits while the broker runs (the validator's
 * extra identities, the authorizer's registered principals): its entries,
 * read again whenever its modification time or size changes. Blank lines
 * and lines starting with '#' are skipped; a missing file has no entries.
 */
final class FerryWatchedFile {
    private final Path path;
    private long modified = Long.MIN_VALUE;
    private long size = Long.MIN_VALUE;

    FerryWatchedFile(Path path) {
        this.path = path;
    }

    Path path() {
        return path;
    }

    /** The file's entries if it changed since the last call, else null. */
    synchronized List<String> changed() throws IOException {
        long m = Files.exists(path) ? Files.getLastModifiedTime(path).toMillis() : -1;
        long s = m < 0 ? -1 : Files.size(path);
        if (m == modified && s == size) {
            return null;
        }
        List<String> entries = new ArrayList<>();
        if (m >= 0) {
            for (String line : Files.readAllLines(path, StandardCharsets.UTF_8)) {
                String entry = line.strip();
                if (!entry.isEmpty() && !entry.startsWith("#")) {
                    entries.add(entry);
                }
            }
        }
        modified = m;
        size = s;
        return entries;
    }
}
