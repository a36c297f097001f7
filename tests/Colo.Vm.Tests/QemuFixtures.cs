using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace Colo.Vm.Tests;

/// <summary>A fact that is skipped (with the reason) unless running as root with QEMU on PATH.</summary>
public sealed class QemuFactAttribute : FactAttribute
{
    public QemuFactAttribute()
    {
        if (!Environment.IsPrivilegedProcess)
        {
            Skip = "QEMU integration tests need root.";
        }
        else if (FindOnPath("qemu-system-x86_64") is null)
        {
            Skip = "qemu-system-x86_64 not found on PATH.";
        }
        else if (!Directory.Exists("/dev/shm"))
        {
            Skip = "/dev/shm missing.";
        }
    }

    internal static string? FindOnPath(string exe) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries)
            .Select(d => Path.Combine(d, exe)).FirstOrDefault(File.Exists);
}

/// <summary>Listens on a VM's NetSocketPath, accepts QEMU's -netdev stream connection and drains it.</summary>
internal sealed class NetSink : IAsyncDisposable
{
    private readonly Socket _listener;
    private readonly Task _loop;
    private Socket? _conn;

    public NetSink(string path)
    {
        Path = path;
        File.Delete(path);
        _listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        _listener.Bind(new UnixDomainSocketEndPoint(path));
        _listener.Listen(4);
        _loop = RunAsync();
    }

    public string Path { get; }

    public TaskCompletionSource Connected { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public TaskCompletionSource Closed { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public long BytesReceived;

    private async Task RunAsync()
    {
        try
        {
            _conn = await _listener.AcceptAsync();
            Connected.TrySetResult();
            byte[] buf = new byte[65536];
            int n;
            while ((n = await _conn.ReceiveAsync(buf, SocketFlags.None)) > 0)
            {
                Interlocked.Add(ref BytesReceived, n);
            }

            Closed.TrySetResult();
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            Closed.TrySetResult();
        }
    }

    public async ValueTask DisposeAsync()
    {
        _listener.Dispose();
        _conn?.Dispose();
        await _loop;
        File.Delete(Path);
    }
}

/// <summary>Per-test directory and RAM file; deleted on dispose.</summary>
internal sealed class VmScratch : IDisposable
{
    public VmScratch()
    {
        Id = Guid.NewGuid().ToString("N")[..8];
        Dir = Directory.CreateTempSubdirectory("colovm-").FullName;
        RamFile = $"/dev/shm/colovm-{Id}.ram";
    }

    public string Id { get; }

    public string Dir { get; }

    public string RamFile { get; }

    public VmSpec Spec(string name, bool incoming = false) => new()
    {
        Name = name,
        MemoryMiB = 64,
        RamFilePath = RamFile,
        NetSocketPath = System.IO.Path.Combine(Dir, name + "-net.sock"),
        MacAddress = "52:54:00:12:34:56",
        QmpSocketPath = System.IO.Path.Combine(Dir, name + "-qmp.sock"),
        ConsoleLogPath = System.IO.Path.Combine(Dir, name + ".log"),
        IncomingDefer = incoming,
        Accelerator = Accelerator.Tcg,
    };

    public void Dispose()
    {
        try
        {
            Directory.Delete(Dir, recursive: true);
        }
        catch (IOException)
        {
        }

        File.Delete(RamFile);
    }
}

internal static partial class Native
{
    public const int SIGSTOP = 19;

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    public static partial int Kill(int pid, int sig);
}
