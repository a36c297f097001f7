using System.Diagnostics;
using System.IO.Compression;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.Extensions.Logging;

namespace Colo.Image;

/// <summary>
/// Builds the COLO guest image (Debian cloud kernel + busybox/redis/httpd initramfs) from Debian
/// packages, and caches it under <c>cacheRoot/&lt;inputsHash&gt;/</c> (<c>vmlinuz</c>, <c>initrd.img</c>,
/// <c>manifest.json</c>).
/// <para>
/// Inputs hashed: <see cref="BuilderVersion"/>, the text of every generated guest file (/init, redis
/// config, CGI, index page), the exact package names and versions (apt candidate versions of
/// <c>linux-image-cloud-amd64</c>'s concrete kernel package, <c>busybox-static</c>, <c>redis-tools</c>)
/// and the SHA-256 of every host shared library copied into the image (list remembered in
/// <c>cacheRoot/host-libs.list</c>). A cache directory is published by an atomic rename of a fully
/// written temporary directory, so a crashed build never leaves a half image. Builds are serialised
/// across processes by an exclusive lock on <c>cacheRoot/.build.lock</c>.
/// </para>
/// <para>
/// Requires root (apt-get; writing the default cache root) on Debian 12 amd64. Host tools it needs that
/// may be missing (<c>xz-utils</c>, <c>zstd</c> for compressed modules, redis' shared-library packages) are
/// installed with apt-get. Packages are downloaded with <c>apt-get download</c> and unpacked with
/// <c>dpkg-deb -x</c>; nothing from them is installed on the host.
/// </para>
/// </summary>
public sealed class GuestImageBuilder
{
    /// <summary>Default cache root directory.</summary>
    public const string DefaultCacheRoot = "/var/cache/colo/image";

    /// <summary>Version of the builder and of the guest's init design; part of the inputs hash.</summary>
    public const string BuilderVersion = "colo-image/2";

    /// <summary>Debian meta-package whose dependency names the concrete kernel package.</summary>
    public const string KernelMetaPackage = "linux-image-cloud-amd64";

    /// <summary>The line the guest prints on its console (ttyS0) once redis and httpd serve.</summary>
    public const string ReadyMarker = GuestFiles.ReadyMarker;

    /// <summary>The line the guest prints instead if its services did not come up within ~60 s of guest time.</summary>
    public const string FailedMarker = GuestFiles.FailedMarker;

    /// <summary>Name of the kernel file inside a cache directory.</summary>
    public const string KernelFileName = "vmlinuz";

    /// <summary>Name of the initramfs file inside a cache directory.</summary>
    public const string InitrdFileName = "initrd.img";

    /// <summary>Name of the manifest file inside a cache directory.</summary>
    public const string ManifestFileName = "manifest.json";

    private const string BusyboxPackage = "busybox-static";
    private const string RedisToolsPackage = "redis-tools";
    private const string HostLibListFile = "host-libs.list";
    private const string ResolvedInputsFile = "resolved-inputs.json";

    private static readonly TimeSpan AptQueryTimeout = TimeSpan.FromMinutes(2);
    private static readonly TimeSpan AptUpdateTimeout = TimeSpan.FromMinutes(10);
    private static readonly TimeSpan AptDownloadTimeout = TimeSpan.FromMinutes(15);
    private static readonly TimeSpan AptInstallTimeout = TimeSpan.FromMinutes(15);
    private static readonly TimeSpan ToolTimeout = TimeSpan.FromMinutes(5);
    private static readonly TimeSpan LockWaitTimeout = TimeSpan.FromMinutes(60);

    private static readonly JsonSerializerOptions JsonOptions = new()
    {
        WriteIndented = true,
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    private readonly ILogger _log;
    private bool _aptUpdated;

    /// <summary>Creates a builder.</summary>
    /// <param name="cacheRoot">Cache root directory (created on demand); usually <see cref="DefaultCacheRoot"/>.</param>
    /// <param name="logger">Receives progress (Information) and problems (Warning).</param>
    /// <exception cref="ArgumentException"><paramref name="cacheRoot"/> is null or empty.</exception>
    /// <exception cref="ArgumentNullException"><paramref name="logger"/> is null.</exception>
    public GuestImageBuilder(string cacheRoot, ILogger logger)
    {
        ArgumentException.ThrowIfNullOrEmpty(cacheRoot);
        ArgumentNullException.ThrowIfNull(logger);
        CacheRoot = Path.GetFullPath(cacheRoot);
        _log = logger;
    }

    /// <summary>Creates a builder using <see cref="DefaultCacheRoot"/>.</summary>
    /// <param name="logger">Receives progress and problems.</param>
    public GuestImageBuilder(ILogger logger) : this(DefaultCacheRoot, logger) { }

    /// <summary>Absolute cache root directory.</summary>
    public string CacheRoot { get; }

    /// <summary>Path of apt-cache (tests point it elsewhere to simulate an unusable apt).</summary>
    internal string AptCacheTool { get; init; } = "/usr/bin/apt-cache";

    /// <summary>
    /// Returns the cached image for the current inputs, building it first if the inputs changed (new
    /// package version, new builder version, changed host library) or no valid cached image exists.
    /// A cache hit costs hashing the host libraries (~15 MB, tens of ms) plus, only when apt's lists,
    /// configuration or dpkg status changed since the last call, one <c>apt-cache show</c> (~1 s).
    /// If the package inputs cannot be resolved (e.g. apt lists unusable and no network) but a valid
    /// cached image of the same <see cref="BuilderVersion"/> exists, the newest such image is returned
    /// with a warning.
    /// </summary>
    /// <param name="ct">Cancels the operation; a build in progress is abandoned and its temp directory removed.</param>
    /// <returns>The image; its files exist.</returns>
    /// <exception cref="ImageBuildException">A build step failed (<see cref="ImageBuildException.Step"/> says which).</exception>
    /// <exception cref="OperationCanceledException"><paramref name="ct"/> was cancelled.</exception>
    public async Task<GuestImage> EnsureAsync(CancellationToken ct)
    {
        BuildInputs inputs;
        try
        {
            inputs = await ResolveInputsAsync(ct).ConfigureAwait(false);
        }
        catch (ImageBuildException e)
        {
            var newest = FindNewestCached();
            if (newest is null) throw;
            _log.LogWarning("could not resolve guest image inputs ({Error}); using newest cached image {Dir}",
                e.Message, newest.CacheDirectory);
            return newest;
        }
        var hash = ComputeInputsHash(inputs, HashHostLibs(ReadHostLibList()));
        var cached = TryLoadCached(hash);
        if (cached is not null)
        {
            _log.LogInformation("guest image up to date: {Dir}", cached.CacheDirectory);
            return cached;
        }
        return await BuildCoreAsync(inputs, force: false, ct).ConfigureAwait(false);
    }

    /// <summary>
    /// Builds the image for the current inputs. With <paramref name="force"/> false this is the same as
    /// <see cref="EnsureAsync"/> except that input resolution errors are not masked by a cached image;
    /// with <paramref name="force"/> true the image is rebuilt and replaces any cached one with the same hash.
    /// A cold build downloads ~28 MB of packages and takes roughly 10–30 s.
    /// </summary>
    /// <param name="force">Rebuild even if a valid cached image for the same inputs exists.</param>
    /// <param name="ct">Cancels the build; its temp directory is removed.</param>
    /// <returns>The image; its files exist.</returns>
    /// <exception cref="ImageBuildException">A build step failed (<see cref="ImageBuildException.Step"/> says which).</exception>
    /// <exception cref="OperationCanceledException"><paramref name="ct"/> was cancelled.</exception>
    public async Task<GuestImage> BuildAsync(bool force, CancellationToken ct)
    {
        var inputs = await ResolveInputsAsync(ct).ConfigureAwait(false);
        if (!force)
        {
            var cached = TryLoadCached(ComputeInputsHash(inputs, HashHostLibs(ReadHostLibList())));
            if (cached is not null) return cached;
        }
        return await BuildCoreAsync(inputs, force, ct).ConfigureAwait(false);
    }

    // ------------------------------------------------------------------ inputs

    internal sealed record PackageRef(string Name, string Version);

    internal sealed record BuildInputs(string KernelMetaVersion, PackageRef Kernel, PackageRef Busybox, PackageRef RedisTools)
    {
        public IEnumerable<PackageRef> Packages => [Kernel, Busybox, RedisTools];
    }

    /// <summary>
    /// Resolves exact candidate versions with one <c>apt-cache show --no-all-versions</c> (each apt-cache
    /// run costs ~0.7 s on a host without a persistent pkgcache.bin). Runs apt-get update once if a
    /// package is unknown (empty lists).
    /// </summary>
    private async Task<BuildInputs> ResolveInputsAsync(CancellationToken ct)
    {
        RequireTool("apt-cache", AptCacheTool);
        // apt's answer depends only on its lists, its configuration and dpkg's status; when none of
        // them changed since the last resolution, reuse it (saves ~1 s per EnsureAsync).
        var fingerprint = AptStateFingerprint();
        var memo = Path.Combine(CacheRoot, ResolvedInputsFile);
        try
        {
            if (fingerprint is not null && File.Exists(memo)
                && JsonSerializer.Deserialize<ResolvedInputsMemo>(await File.ReadAllTextAsync(memo, ct).ConfigureAwait(false), JsonOptions)
                    is { } m && m.AptFingerprint == fingerprint && m.Inputs is not null)
                return m.Inputs;
        }
        catch (Exception e) when (e is IOException or JsonException or UnauthorizedAccessException) { }

        var resolved = await ResolveInputsFromAptAsync(ct).ConfigureAwait(false);
        var after = AptStateFingerprint(); // apt-get update may have run
        if (after is not null)
        {
            try
            {
                Directory.CreateDirectory(CacheRoot);
                var tmp = memo + $".{Guid.NewGuid():N}.tmp";
                await File.WriteAllTextAsync(tmp, JsonSerializer.Serialize(new ResolvedInputsMemo(after, resolved), JsonOptions), ct)
                    .ConfigureAwait(false);
                File.Move(tmp, memo, overwrite: true);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                _log.LogDebug("could not store resolved inputs: {Error}", e.Message);
            }
        }
        return resolved;
    }

    internal sealed record ResolvedInputsMemo(string AptFingerprint, BuildInputs Inputs);

    /// <summary>
    /// Hash of the names, sizes and modification times of everything apt's candidate selection depends on
    /// (/var/lib/apt/lists, /etc/apt, /var/lib/dpkg/status); null if it cannot be read.
    /// </summary>
    internal static string? AptStateFingerprint()
    {
        try
        {
            var sb = new StringBuilder(BuilderVersion).Append('\n');
            foreach (var root in new[] { "/var/lib/apt/lists", "/etc/apt" })
            {
                if (!Directory.Exists(root)) { sb.Append("none ").Append(root).Append('\n'); continue; }
                foreach (var f in Directory.EnumerateFiles(root, "*", SearchOption.AllDirectories)
                             .Where(f => !f.Contains("/partial/", StringComparison.Ordinal) && !f.EndsWith("/lock", StringComparison.Ordinal))
                             .Order(StringComparer.Ordinal))
                {
                    var fi = new FileInfo(f);
                    sb.Append(f).Append(' ').Append(fi.Length).Append(' ').Append(fi.LastWriteTimeUtc.Ticks).Append('\n');
                }
            }
            var status = new FileInfo("/var/lib/dpkg/status");
            sb.Append("status ").Append(status.Exists ? status.LastWriteTimeUtc.Ticks : 0).Append('\n');
            return Sha256Hex(Encoding.UTF8.GetBytes(sb.ToString()));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    private async Task<BuildInputs> ResolveInputsFromAptAsync(CancellationToken ct)
    {
        var records = await ShowCandidatesAsync([KernelMetaPackage, BusyboxPackage, RedisToolsPackage], ct).ConfigureAwait(false);
        var meta = records[KernelMetaPackage];
        var (kernelPkg, kernelVersion) = ParseKernelDependencyWithVersion(meta.Depends)
            ?? throw new ImageBuildException("apt-cache show",
                $"{KernelMetaPackage} {meta.Version} has no linux-image-* dependency");
        if (kernelVersion is null)
            kernelVersion = (await ShowCandidatesAsync([kernelPkg], ct).ConfigureAwait(false))[kernelPkg].Version;
        return new BuildInputs(meta.Version, new PackageRef(kernelPkg, kernelVersion),
            new PackageRef(BusyboxPackage, records[BusyboxPackage].Version),
            new PackageRef(RedisToolsPackage, records[RedisToolsPackage].Version));
    }

    internal sealed record AptRecord(string Package, string Version, string Depends);

    private async Task<Dictionary<string, AptRecord>> ShowCandidatesAsync(IReadOnlyList<string> packages, CancellationToken ct)
    {
        for (var attempt = 0; ; attempt++)
        {
            var r = await ProcessRunner.RunAsync("apt-cache show", AptCacheTool, ["show", "--no-all-versions", .. packages],
                AptQueryTimeout, ct).ConfigureAwait(false);
            var recs = r.ExitCode == 0 ? ParseAptRecords(r.StdOut) : [];
            var missing = packages.Where(p => !recs.ContainsKey(p)).ToList();
            if (missing.Count == 0) return recs;
            if (attempt > 0 || _aptUpdated)
                throw new ImageBuildException("apt-cache show",
                    $"no installation candidate for {string.Join(' ', missing)}: {ProcessRunner.Tail(r.StdErr, 500)}");
            _log.LogWarning("apt-cache knows no candidate for {Packages}; running apt-get update", string.Join(' ', missing));
            await AptUpdateAsync(ct).ConfigureAwait(false);
        }
    }

    /// <summary>Parses deb822 stanzas from apt-cache show; first stanza per package wins.</summary>
    internal static Dictionary<string, AptRecord> ParseAptRecords(string output)
    {
        var d = new Dictionary<string, AptRecord>(StringComparer.Ordinal);
        foreach (var stanza in Regex.Split(output.Replace("\r", ""), @"\n\s*\n"))
        {
            string? F(string field)
            {
                var m = Regex.Match(stanza, $@"^{field}:[ \t]*(.*)$", RegexOptions.Multiline);
                return m.Success ? m.Groups[1].Value.Trim() : null;
            }
            var pkg = F("Package");
            var ver = F("Version");
            if (pkg is null || ver is null) continue;
            d.TryAdd(pkg, new AptRecord(pkg, ver, F("Depends") ?? ""));
        }
        return d;
    }

    private async Task AptUpdateAsync(CancellationToken ct)
    {
        _log.LogInformation("running apt-get update");
        _aptUpdated = true;
        // Wait for a concurrent apt/dpkg (another component installing packages) instead of failing.
        await ProcessRunner.RunCheckedAsync("apt-get update", "apt-get", ["-o", "DPkg::Lock::Timeout=300", "update"], AptUpdateTimeout, ct)
            .ConfigureAwait(false);
    }

    /// <summary>
    /// From a Depends field, the first <c>linux-image-*</c> package and its exact version if pinned with
    /// <c>(= V)</c>; null if there is none.
    /// </summary>
    internal static (string Package, string? Version)? ParseKernelDependencyWithVersion(string depends)
    {
        foreach (var dep in depends.Split(','))
        {
            var m = Regex.Match(dep.Split('|')[0], @"^\s*(linux-image-[^\s(]+)\s*(?:\(\s*=\s*([^\s)]+)\s*\))?");
            if (m.Success) return (m.Groups[1].Value, m.Groups[2].Success ? m.Groups[2].Value : null);
        }
        return null;
    }

    internal static string ComputeInputsHash(BuildInputs inputs, IReadOnlyList<HostLib> hostLibs)
    {
        var sb = new StringBuilder();
        sb.Append("builder=").Append(BuilderVersion).Append('\n');
        foreach (var (name, text) in GuestTexts())
            sb.Append("file ").Append(name).Append(' ').Append(Sha256Hex(Encoding.UTF8.GetBytes(text))).Append('\n');
        sb.Append("modules ").Append(string.Join(',', GuestFiles.RequiredModules)).Append(';')
          .Append(string.Join(',', GuestFiles.OptionalModules)).Append('\n');
        foreach (var p in inputs.Packages) sb.Append("pkg ").Append(p.Name).Append('=').Append(p.Version).Append('\n');
        foreach (var l in hostLibs.OrderBy(l => l.HostPath, StringComparer.Ordinal))
            sb.Append("lib ").Append(l.HostPath).Append(' ').Append(l.Sha256).Append('\n');
        return Sha256Hex(Encoding.UTF8.GetBytes(sb.ToString()));
    }

    private static IEnumerable<(string Name, string Text)> GuestTexts() =>
    [
        ("init", GuestFiles.Init), ("redis.conf", GuestFiles.RedisConf),
        ("counter", GuestFiles.CounterCgi), ("index.html", GuestFiles.IndexHtml),
    ];

    internal sealed record HostLib(string HostPath, string Sha256);

    private List<string> ReadHostLibList()
    {
        var f = Path.Combine(CacheRoot, HostLibListFile);
        try
        {
            return File.Exists(f)
                ? File.ReadAllLines(f).Select(l => l.Trim()).Where(l => l.Length > 0).ToList()
                : [];
        }
        catch (IOException) { return []; }
        catch (UnauthorizedAccessException) { return []; }
    }

    private static List<HostLib> HashHostLibs(IEnumerable<string> paths) =>
        paths.Select(p =>
        {
            try { return new HostLib(p, Sha256Hex(File.ReadAllBytes(p))); }
            catch (IOException) { return new HostLib(p, "missing"); }
            catch (UnauthorizedAccessException) { return new HostLib(p, "unreadable"); }
        }).ToList();

    // ------------------------------------------------------------------ cache

    private GuestImage? TryLoadCached(string hash, bool quiet = false)
    {
        var dir = Path.Combine(CacheRoot, hash);
        try
        {
            var manifestPath = Path.Combine(dir, ManifestFileName);
            if (!File.Exists(manifestPath)) return null;
            var m = JsonSerializer.Deserialize<ImageManifest>(File.ReadAllText(manifestPath), JsonOptions);
            var kernel = Path.Combine(dir, KernelFileName);
            var initrd = Path.Combine(dir, InitrdFileName);
            if (m is null || m.InputsHash != hash || !File.Exists(kernel) || !File.Exists(initrd)
                || new FileInfo(kernel).Length != m.KernelBytes || new FileInfo(initrd).Length != m.InitrdBytes)
            {
                if (!quiet) _log.LogWarning("cached guest image {Dir} is invalid; rebuilding", dir);
                return null;
            }
            return new GuestImage(kernel, initrd, dir, hash);
        }
        catch (Exception e) when (e is IOException or JsonException or UnauthorizedAccessException)
        {
            _log.LogWarning("cached guest image {Dir} unreadable ({Error}); rebuilding", dir, e.Message);
            return null;
        }
    }

    private GuestImage? FindNewestCached()
    {
        if (!Directory.Exists(CacheRoot)) return null;
        return Directory.GetDirectories(CacheRoot)
            .Select(Path.GetFileName)
            .Where(n => n is not null && Regex.IsMatch(n, "^[0-9a-f]{64}$"))
            .Select(n => TryLoadCached(n!, quiet: true))
            .Where(i => i is not null && ManifestBuilderVersion(i.CacheDirectory) == BuilderVersion)
            .OrderByDescending(i => File.GetLastWriteTimeUtc(Path.Combine(i!.CacheDirectory, ManifestFileName)))
            .FirstOrDefault();
    }

    private static string? ManifestBuilderVersion(string dir)
    {
        try
        {
            return JsonSerializer.Deserialize<ImageManifest>(File.ReadAllText(Path.Combine(dir, ManifestFileName)), JsonOptions)
                ?.BuilderVersion;
        }
        catch (Exception e) when (e is IOException or JsonException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    private async Task<FileStream> AcquireLockAsync(CancellationToken ct)
    {
        var path = Path.Combine(CacheRoot, ".build.lock");
        var sw = Stopwatch.StartNew();
        var logged = false;
        while (true)
        {
            try
            {
                return new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
            }
            catch (IOException) when (sw.Elapsed < LockWaitTimeout)
            {
                if (!logged) _log.LogInformation("waiting for another guest image build ({Lock})", path);
                logged = true;
                await Task.Delay(500, ct).ConfigureAwait(false);
            }
            catch (IOException e)
            {
                throw new ImageBuildException("lock", $"could not lock {path} within {LockWaitTimeout}", e);
            }
        }
    }

    // ------------------------------------------------------------------ build

    private async Task<GuestImage> BuildCoreAsync(BuildInputs inputs, bool force, CancellationToken ct)
    {
        try { Directory.CreateDirectory(CacheRoot); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ImageBuildException("cache directory", $"cannot create {CacheRoot}: {e.Message}", e);
        }

        using var lockFile = await AcquireLockAsync(ct).ConfigureAwait(false);
        if (!force)
        {
            // Another process may have built it while we waited for the lock.
            var cached = TryLoadCached(ComputeInputsHash(inputs, HashHostLibs(ReadHostLibList())));
            if (cached is not null) return cached;
        }
        CleanStale();

        var sw = Stopwatch.StartNew();
        var tmp = Path.Combine(CacheRoot, $".tmp-{Guid.NewGuid():N}");
        var work = Path.Combine(tmp, "work");
        var outDir = Path.Combine(tmp, "out");
        Directory.CreateDirectory(work);
        Directory.CreateDirectory(outDir);
        try
        {
            _log.LogInformation("building guest image: kernel {Kernel} {KVer}, {Bb} {BbVer}, {Redis} {RedisVer}",
                inputs.Kernel.Name, inputs.Kernel.Version, inputs.Busybox.Name, inputs.Busybox.Version,
                inputs.RedisTools.Name, inputs.RedisTools.Version);
            RequireTool("apt-get", "/usr/bin/apt-get");
            RequireTool("dpkg-deb", "/usr/bin/dpkg-deb");
            RequireTool("ldd", "/usr/bin/ldd");

            var debs = new List<DebInfo>();
            foreach (var p in inputs.Packages)
                debs.Add(await DownloadAsync(p, Path.Combine(work, "debs", p.Name), ct).ConfigureAwait(false));
            var roots = new Dictionary<string, string>();
            foreach (var d in debs)
            {
                var x = Path.Combine(work, "x", d.Package);
                Directory.CreateDirectory(x);
                await ProcessRunner.RunCheckedAsync("dpkg-deb -x", "dpkg-deb", ["-x", d.Path, x], ToolTimeout, ct)
                    .ConfigureAwait(false);
                roots[d.Package] = x;
            }

            var layout = new InitramfsLayout();
            foreach (var dir in new[] { "dev", "proc", "sys", "tmp", "run", "root", "etc", "var", "mnt",
                         "bin", "sbin", "usr/bin", "usr/sbin", "lib", "lib64" })
                layout.AddDirectory(dir);
            layout.AddDirectory("tmp", 0x3FF /*1777*/);
            // The kernel opens /dev/console before /init runs; it must exist in the archive.
            layout.AddCharDevice("dev/console", 5, 1, 0x180);
            layout.AddCharDevice("dev/null", 1, 3, 0x1B6);

            // Kernel and modules.
            var kroot = roots[inputs.Kernel.Name];
            var (kernelFile, kver) = FindKernel(kroot);
            var modules = await AddModulesAsync(layout, kroot, kver, work, ct).ConfigureAwait(false);

            // busybox + applet links.
            var busybox = Path.Combine(roots[inputs.Busybox.Name], "bin", "busybox");
            if (!File.Exists(busybox)) throw new ImageBuildException("busybox", $"{busybox} not found in {inputs.Busybox.Name}");
            layout.AddFile("bin/busybox", await File.ReadAllBytesAsync(busybox, ct).ConfigureAwait(false), 0x1ED);
            var applets = await ProcessRunner.RunCheckedAsync("busybox --list-full", busybox, ["--list-full"], ToolTimeout, ct)
                .ConfigureAwait(false);
            var appletCount = 0;
            foreach (var line in applets.StdOut.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            {
                if (line is "linuxrc" or "bin/busybox" || !line.Contains('/')) continue;
                layout.AddSymlink(line, "/bin/busybox", replace: false);
                appletCount++;
            }
            if (!layout.Contains("bin/sh")) layout.AddSymlink("bin/sh", "/bin/busybox");

            // redis: redis-server is the multi-call binary redis-check-rdb invoked as redis-server.
            var redisBin = Path.Combine(roots[inputs.RedisTools.Name], "usr", "bin", "redis-check-rdb");
            if (!File.Exists(redisBin))
                throw new ImageBuildException("redis", $"{redisBin} not found in {inputs.RedisTools.Name}");
            layout.AddFile("usr/bin/redis-check-rdb", await File.ReadAllBytesAsync(redisBin, ct).ConfigureAwait(false), 0x1ED);
            layout.AddSymlink("usr/bin/redis-server", "redis-check-rdb");
            var redisDeb = debs.Single(d => d.Package == inputs.RedisTools.Name);
            var libs = await ResolveLibrariesAsync(redisBin, redisDeb.Path, ct).ConfigureAwait(false);
            var hostLibs = new List<HostLib>();
            foreach (var (guestPath, hostPath) in libs)
            {
                var bytes = await File.ReadAllBytesAsync(hostPath, ct).ConfigureAwait(false);
                layout.AddFile(guestPath, bytes, 0x1ED);
                hostLibs.Add(new HostLib(hostPath, Sha256Hex(bytes)));
            }

            // Generated files.
            layout.AddFile("init", Encoding.UTF8.GetBytes(GuestFiles.Init), 0x1ED);
            layout.AddFile("etc/colo/redis.conf", Encoding.UTF8.GetBytes(GuestFiles.RedisConf));
            layout.AddFile("www/index.html", Encoding.UTF8.GetBytes(GuestFiles.IndexHtml));
            layout.AddFile("www/cgi-bin/counter", Encoding.UTF8.GetBytes(GuestFiles.CounterCgi), 0x1ED);
            layout.AddFile("etc/passwd", Encoding.UTF8.GetBytes("root:x:0:0:root:/root:/bin/sh\n"));
            layout.AddFile("etc/group", Encoding.UTF8.GetBytes("root:x:0:\n"));
            layout.AddFile("etc/hostname", Encoding.UTF8.GetBytes("colo-guest\n"));
            layout.AddFile("etc/colo/image-version", Encoding.UTF8.GetBytes($"{BuilderVersion}\n"));

            // Write outputs.
            var kernelOut = Path.Combine(outDir, KernelFileName);
            File.Copy(kernelFile, kernelOut);
            var initrdOut = Path.Combine(outDir, InitrdFileName);
            long rawBytes;
            await using (var fs = new FileStream(initrdOut, FileMode.CreateNew, FileAccess.Write))
            {
                await using (var gz = new GZipStream(fs, CompressionLevel.SmallestSize, leaveOpen: true))
                    rawBytes = layout.WriteTo(gz);
                await fs.FlushAsync(ct).ConfigureAwait(false);
                fs.Flush(flushToDisk: true);
            }

            var hash = ComputeInputsHash(inputs, hostLibs);
            var manifest = new ImageManifest
            {
                BuilderVersion = BuilderVersion,
                InputsHash = hash,
                BuiltAtUtc = DateTime.UtcNow,
                KernelMetaPackage = KernelMetaPackage,
                KernelMetaVersion = inputs.KernelMetaVersion,
                KernelRelease = kver,
                Packages = debs.Select(d => new ManifestPackage(d.Package, d.Version, Path.GetFileName(d.Path), d.Sha256)).ToList(),
                Modules = modules,
                HostLibraries = hostLibs.Select(l => new ManifestLib(l.HostPath, l.Sha256)).ToList(),
                BusyboxApplets = appletCount,
                KernelBytes = new FileInfo(kernelOut).Length,
                InitrdBytes = new FileInfo(initrdOut).Length,
                InitrdUncompressedBytes = rawBytes,
                KernelCmdlineExample = GuestKernelCmdline.Build("10.0.0.2/24"),
                ReadyMarker = ReadyMarker,
            };
            await File.WriteAllTextAsync(Path.Combine(outDir, ManifestFileName),
                JsonSerializer.Serialize(manifest, JsonOptions), ct).ConfigureAwait(false);

            var image = Publish(outDir, hash, force);
            await WriteHostLibListAsync(hostLibs, ct).ConfigureAwait(false);
            _log.LogInformation(
                "guest image built in {Seconds:0.0} s: {Dir} (kernel {KernelMiB:0.0} MiB, initrd {InitrdMiB:0.0} MiB gz / {RawMiB:0.0} MiB raw, kernel {Kver})",
                sw.Elapsed.TotalSeconds, image.CacheDirectory, manifest.KernelBytes / 1048576.0,
                manifest.InitrdBytes / 1048576.0, rawBytes / 1048576.0, kver);
            return image;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidOperationException)
        {
            throw new ImageBuildException("assemble", e.Message, e);
        }
        finally
        {
            TryDelete(tmp);
        }
    }

    private GuestImage Publish(string outDir, string hash, bool force)
    {
        var target = Path.Combine(CacheRoot, hash);
        if (Directory.Exists(target))
        {
            if (!force && TryLoadCached(hash, quiet: true) is { } existing) return existing;
            var trash = Path.Combine(CacheRoot, $".trash-{Guid.NewGuid():N}");
            Directory.Move(target, trash);
            Directory.Move(outDir, target);
            TryDelete(trash);
        }
        else
        {
            Directory.Move(outDir, target);
        }
        return TryLoadCached(hash) ?? throw new ImageBuildException("publish", $"published image {target} does not validate");
    }

    private async Task WriteHostLibListAsync(List<HostLib> libs, CancellationToken ct)
    {
        var f = Path.Combine(CacheRoot, HostLibListFile);
        var t = f + ".tmp";
        await File.WriteAllLinesAsync(t, libs.Select(l => l.HostPath), ct).ConfigureAwait(false);
        File.Move(t, f, overwrite: true);
    }

    private void CleanStale()
    {
        foreach (var d in Directory.GetDirectories(CacheRoot))
        {
            var n = Path.GetFileName(d);
            if (n.StartsWith(".tmp-", StringComparison.Ordinal) || n.StartsWith(".trash-", StringComparison.Ordinal))
            {
                _log.LogInformation("removing stale {Dir}", d);
                TryDelete(d);
            }
        }
    }

    private void TryDelete(string dir)
    {
        try { if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            _log.LogWarning("could not delete {Dir}: {Error}", dir, e.Message);
        }
    }

    private sealed record DebInfo(string Package, string Version, string Path, string Sha256);

    private async Task<DebInfo> DownloadAsync(PackageRef p, string dir, CancellationToken ct)
    {
        Directory.CreateDirectory(dir);
        for (var attempt = 0; ; attempt++)
        {
            var r = await ProcessRunner.RunAsync("apt-get download", "apt-get", ["download", $"{p.Name}={p.Version}"],
                AptDownloadTimeout, ct, workDir: dir).ConfigureAwait(false);
            if (r.ExitCode == 0) break;
            if (attempt == 0 && !_aptUpdated)
            {
                _log.LogWarning("apt-get download {Pkg}={Ver} failed ({Err}); running apt-get update and retrying",
                    p.Name, p.Version, ProcessRunner.Tail(r.StdErr, 300));
                await AptUpdateAsync(ct).ConfigureAwait(false);
                continue;
            }
            throw new ImageBuildException("apt-get download",
                $"apt-get download {p.Name}={p.Version} exited with {r.ExitCode}: {ProcessRunner.Tail(r.StdErr)}");
        }
        var files = Directory.GetFiles(dir, "*.deb");
        if (files.Length != 1)
            throw new ImageBuildException("apt-get download", $"expected one .deb in {dir}, found {files.Length}");
        await using var fs = File.OpenRead(files[0]);
        var sha = Convert.ToHexStringLower(await SHA256.HashDataAsync(fs, ct).ConfigureAwait(false));
        _log.LogInformation("downloaded {File} ({Bytes} bytes, sha256 {Sha})", Path.GetFileName(files[0]), fs.Length, sha);
        return new DebInfo(p.Name, p.Version, files[0], sha);
    }

    private static (string Kernel, string Release) FindKernel(string kroot)
    {
        var boot = Path.Combine(kroot, "boot");
        var kernels = Directory.Exists(boot) ? Directory.GetFiles(boot, "vmlinuz-*") : [];
        if (kernels.Length != 1)
            throw new ImageBuildException("find kernel", $"expected one boot/vmlinuz-* in the kernel package, found {kernels.Length}");
        return (kernels[0], Path.GetFileName(kernels[0])["vmlinuz-".Length..]);
    }

    internal static string NormalizeModuleName(string n) => n.Replace('-', '_');

    internal static string? ModuleBaseName(string fileName)
    {
        foreach (var ext in new[] { ".ko", ".ko.xz", ".ko.zst", ".ko.gz" })
            if (fileName.EndsWith(ext, StringComparison.Ordinal)) return fileName[..^ext.Length];
        return null;
    }

    /// <summary>Copies the wanted modules (decompressed) to /lib/modules/NAME.ko and writes the load order file.</summary>
    private async Task<List<string>> AddModulesAsync(InitramfsLayout layout, string kroot, string kver, string work,
        CancellationToken ct)
    {
        var modDir = new[] { Path.Combine(kroot, "lib", "modules", kver), Path.Combine(kroot, "usr", "lib", "modules", kver) }
            .FirstOrDefault(Directory.Exists)
            ?? throw new ImageBuildException("find modules", $"no lib/modules/{kver} in the kernel package");
        var available = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var f in Directory.EnumerateFiles(modDir, "*.ko*", SearchOption.AllDirectories))
        {
            var b = ModuleBaseName(Path.GetFileName(f));
            if (b is not null) available.TryAdd(NormalizeModuleName(b), f);
        }
        var builtinFile = Path.Combine(modDir, "modules.builtin");
        var builtin = File.Exists(builtinFile)
            ? File.ReadAllLines(builtinFile).Select(l => ModuleBaseName(Path.GetFileName(l.Trim())))
                .Where(n => n is not null).Select(n => NormalizeModuleName(n!)).ToHashSet(StringComparer.Ordinal)
            : [];

        var order = new List<string>();
        var decompDir = Path.Combine(work, "modules");
        Directory.CreateDirectory(decompDir);
        foreach (var (name, required) in GuestFiles.RequiredModules.Select(n => (n, true))
                     .Concat(GuestFiles.OptionalModules.Select(n => (n, false))))
        {
            if (!available.TryGetValue(name, out var src))
            {
                if (builtin.Contains(name)) _log.LogDebug("module {Module} is built into the kernel", name);
                else if (required) throw new ImageBuildException("find modules", $"module {name} not found in {modDir} (neither .ko* nor built-in)");
                else _log.LogDebug("optional module {Module} not available", name);
                continue;
            }
            var plain = await DecompressModuleAsync(src, decompDir, ct).ConfigureAwait(false);
            layout.AddFile($"lib/modules/{name}.ko", await File.ReadAllBytesAsync(plain, ct).ConfigureAwait(false));
            order.Add(name);
        }
        layout.AddFile(GuestFiles.ModuleOrderFile, Encoding.UTF8.GetBytes(string.Join('\n', order) + "\n"));
        _log.LogInformation("kernel {Kver}: modules {Modules}", kver, string.Join(' ', order));
        return order;
    }

    private async Task<string> DecompressModuleAsync(string src, string dir, CancellationToken ct)
    {
        var name = Path.GetFileName(src);
        if (name.EndsWith(".ko", StringComparison.Ordinal)) return src;
        var copy = Path.Combine(dir, name);
        File.Copy(src, copy, overwrite: true);
        var plain = copy[..copy.LastIndexOf(".ko", StringComparison.Ordinal)] + ".ko";
        if (name.EndsWith(".ko.gz", StringComparison.Ordinal))
        {
            await using var i = new GZipStream(File.OpenRead(copy), CompressionMode.Decompress);
            await using var o = File.Create(plain);
            await i.CopyToAsync(o, ct).ConfigureAwait(false);
        }
        else if (name.EndsWith(".ko.xz", StringComparison.Ordinal))
        {
            await EnsureHostPackageToolAsync("/usr/bin/xz", "xz-utils", ct).ConfigureAwait(false);
            await ProcessRunner.RunCheckedAsync("xz -d", "xz", ["-d", "-f", copy], ToolTimeout, ct).ConfigureAwait(false);
        }
        else
        {
            await EnsureHostPackageToolAsync("/usr/bin/zstd", "zstd", ct).ConfigureAwait(false);
            await ProcessRunner.RunCheckedAsync("zstd -d", "zstd", ["-d", "-q", "-f", copy, "-o", plain], ToolTimeout, ct)
                .ConfigureAwait(false);
        }
        if (!File.Exists(plain)) throw new ImageBuildException("decompress module", $"{plain} not produced");
        return plain;
    }

    private async Task EnsureHostPackageToolAsync(string toolPath, string package, CancellationToken ct)
    {
        if (File.Exists(toolPath)) return;
        await AptInstallAsync([package], ct).ConfigureAwait(false);
        if (!File.Exists(toolPath))
            throw new ImageBuildException("install host tools", $"{toolPath} missing after installing {package}");
    }

    private async Task AptInstallAsync(IReadOnlyList<string> packages, CancellationToken ct)
    {
        _log.LogInformation("installing host packages: {Packages}", string.Join(' ', packages));
        for (var attempt = 0; ; attempt++)
        {
            var r = await ProcessRunner.RunAsync("apt-get install", "apt-get",
                ["-o", "DPkg::Lock::Timeout=300", "install", "-y", "--no-install-recommends", .. packages], AptInstallTimeout, ct).ConfigureAwait(false);
            if (r.ExitCode == 0) return;
            if (attempt == 0 && !_aptUpdated)
            {
                await AptUpdateAsync(ct).ConfigureAwait(false);
                continue;
            }
            throw new ImageBuildException("apt-get install",
                $"apt-get install {string.Join(' ', packages)} exited with {r.ExitCode}: {ProcessRunner.Tail(r.StdErr)}");
        }
    }

    /// <summary>
    /// Runs ldd on the redis binary and returns (path in guest, path on host) for every library and the
    /// ELF interpreter. Installs redis-tools' library dependencies on the host if ldd reports "not found".
    /// </summary>
    private async Task<List<(string Guest, string Host)>> ResolveLibrariesAsync(string binary, string deb, CancellationToken ct)
    {
        for (var attempt = 0; ; attempt++)
        {
            var r = await ProcessRunner.RunAsync("ldd", "ldd", [binary], ToolTimeout, ct).ConfigureAwait(false);
            var (libs, missing) = ParseLdd(r.StdOut);
            if (r.ExitCode == 0 && missing.Count == 0 && libs.Count > 0) return libs;
            if (attempt > 0)
                throw new ImageBuildException("ldd",
                    $"ldd {binary} exited with {r.ExitCode}; missing: {string.Join(' ', missing)} {ProcessRunner.Tail(r.StdErr, 500)}");
            var depends = await ProcessRunner.RunCheckedAsync("dpkg-deb -f", "dpkg-deb", ["-f", deb, "Depends"], ToolTimeout, ct)
                .ConfigureAwait(false);
            var libPkgs = depends.StdOut.Split(',')
                .Select(d => d.Split('|')[0].Trim().Split(' ', '(')[0].Trim())
                .Where(n => n.StartsWith("lib", StringComparison.Ordinal)).ToList();
            _log.LogWarning("ldd: missing libraries {Missing}; installing {Packages}", string.Join(' ', missing), string.Join(' ', libPkgs));
            if (libPkgs.Count == 0) throw new ImageBuildException("ldd", $"missing libraries {string.Join(' ', missing)}");
            await AptInstallAsync(libPkgs, ct).ConfigureAwait(false);
        }
    }

    /// <summary>Parses ldd output into (guest path, host path) pairs and a list of libraries not found.</summary>
    internal static (List<(string Guest, string Host)> Libs, List<string> Missing) ParseLdd(string output)
    {
        var libs = new List<(string, string)>();
        var missing = new List<string>();
        foreach (var raw in output.Split('\n'))
        {
            var line = raw.Trim();
            if (line.Length == 0 || line.StartsWith("linux-vdso", StringComparison.Ordinal)
                || line.StartsWith("linux-gate", StringComparison.Ordinal)) continue;
            var arrow = line.IndexOf("=>", StringComparison.Ordinal);
            if (arrow >= 0)
            {
                var name = line[..arrow].Trim();
                var rest = line[(arrow + 2)..].Trim();
                if (rest.StartsWith("not found", StringComparison.Ordinal)) { missing.Add(name); continue; }
                var path = rest.Split(' ')[0];
                if (!path.StartsWith('/')) continue;
                libs.Add((path.TrimStart('/'), path));
            }
            else if (line.StartsWith('/'))
            {
                var path = line.Split(' ')[0];
                libs.Add((path.TrimStart('/'), path));
            }
        }
        return (libs, missing);
    }

    private static void RequireTool(string name, string path)
    {
        if (!File.Exists(path))
            throw new ImageBuildException("host tools", $"{name} ({path}) not found; this builder needs Debian 12 with apt/dpkg");
    }

    internal static string Sha256Hex(byte[] data) => Convert.ToHexStringLower(SHA256.HashData(data));
}

/// <summary>Contents of <c>manifest.json</c> in a cache directory.</summary>
internal sealed class ImageManifest
{
    public string BuilderVersion { get; set; } = "";
    public string InputsHash { get; set; } = "";
    public DateTime BuiltAtUtc { get; set; }
    public string KernelMetaPackage { get; set; } = "";
    public string KernelMetaVersion { get; set; } = "";
    public string KernelRelease { get; set; } = "";
    public List<ManifestPackage> Packages { get; set; } = [];
    public List<string> Modules { get; set; } = [];
    public List<ManifestLib> HostLibraries { get; set; } = [];
    public int BusyboxApplets { get; set; }
    public long KernelBytes { get; set; }
    public long InitrdBytes { get; set; }
    public long InitrdUncompressedBytes { get; set; }
    public string KernelCmdlineExample { get; set; } = "";
    public string ReadyMarker { get; set; } = "";
}

internal sealed record ManifestPackage(string Name, string Version, string DebFile, string Sha256);

internal sealed record ManifestLib(string HostPath, string Sha256);
