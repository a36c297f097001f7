namespace Colo.Image;

/// <summary>
/// In-memory description of the initramfs tree. Parent directories are created implicitly; entries
/// are written in ordinal path order so every directory precedes its contents.
/// </summary>
internal sealed class InitramfsLayout
{
    private abstract record Node;
    private sealed record Dir(uint Perm) : Node;
    private sealed record FileNode(byte[] Data, uint Perm) : Node;
    private sealed record Link(string Target) : Node;
    private sealed record CharDev(uint Major, uint Minor, uint Perm) : Node;

    private readonly SortedDictionary<string, Node> _nodes = new(StringComparer.Ordinal);

    public int Count => _nodes.Count;

    public bool Contains(string path) => _nodes.ContainsKey(NewcCpioWriter.NormalizePath(path));

    public void AddDirectory(string path, uint perm = 0x1ED) => Put(path, new Dir(perm), replace: false);

    public void AddFile(string path, byte[] data, uint perm = 0x1A4) => Put(path, new FileNode(data, perm), replace: true);

    public void AddSymlink(string path, string target, bool replace = true) => Put(path, new Link(target), replace);

    public void AddCharDevice(string path, uint major, uint minor, uint perm = 0x180) =>
        Put(path, new CharDev(major, minor, perm), replace: true);

    private void Put(string path, Node node, bool replace)
    {
        var p = NewcCpioWriter.NormalizePath(path);
        var slash = p.LastIndexOf('/');
        if (slash > 0) EnsureDir(p[..slash]);
        if (_nodes.TryGetValue(p, out var existing))
        {
            if (existing is Dir && node is Dir) return;
            if (existing is Dir || node is Dir)
                throw new InvalidOperationException($"'{p}' is both a directory and a non-directory");
            if (!replace) return;
        }
        _nodes[p] = node;
    }

    private void EnsureDir(string p)
    {
        if (_nodes.TryGetValue(p, out var n))
        {
            if (n is not Dir) throw new InvalidOperationException($"'{p}' is needed as a directory");
            return;
        }
        var slash = p.LastIndexOf('/');
        if (slash > 0) EnsureDir(p[..slash]);
        _nodes[p] = new Dir(0x1ED);
    }

    /// <summary>Writes the archive (with trailer) and returns its uncompressed size in bytes.</summary>
    public long WriteTo(Stream output)
    {
        var w = new NewcCpioWriter(output);
        foreach (var (path, node) in _nodes)
        {
            switch (node)
            {
                case Dir d: w.AddDirectory(path, d.Perm); break;
                case FileNode f: w.AddFile(path, f.Data, f.Perm); break;
                case Link l: w.AddSymlink(path, l.Target); break;
                case CharDev c: w.AddCharDevice(path, c.Major, c.Minor, c.Perm); break;
            }
        }
        w.Finish();
        return w.BytesWritten;
    }
}
